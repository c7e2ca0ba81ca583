"""The autoencoders that make aligned fakes, behind one interface: float RGB in [0, 1], NCHW, in and out.

Two kinds, told apart by what `autoencoder=` names:
- a folder holding `<name>_encoder.pth` and `<name>_decoder.pth`: a tiny autoencoder of madebyollin/taesd (TAESD,
  TAESDXL, TAEF1, TAEF2...), its architecture below and its variant read from the state dicts' shapes;
- anything else: a Hugging Face `diffusers` VAE, a hub name (`stabilityai/sd-vae-ft-mse`; a pipeline's own
  VAE as `owner/repo/vae`) or a folder written by `save_pretrained`, read with `diffusers.AutoModel`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trustthepixels.errors import UserError

log = logging.getLogger(__name__)

OFFLINE_HINT = (
    "Without network access, use a local autoencoder: autoencoder=../shared/weights/taesd (TAEF2), or a folder a "
    "diffusers VAE was saved to with save_pretrained"
)


class AutoencoderError(UserError, ValueError):
    """`autoencoder=` names nothing that can be loaded."""


# ------------------------------------------------------------------------- the tiny autoencoders of madebyollin/taesd
# The reference module's architecture (MIT licence, github.com/madebyollin/taesd, taesd.py), written out so that
# only weights are read from disk: the same layers, in the same order, so its state dicts load unchanged.


def _conv(n_in: int, n_out: int, **kwargs: Any) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class _Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    def __init__(self, n_in: int, n_out: int, midblock_gn: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = None
        if midblock_gn:  # TAEF2's global normalisation in the latent-resolution blocks
            width = n_in * 4
            self.pool = nn.Sequential(
                nn.Conv2d(n_in, width, 1, bias=False),
                nn.GroupNorm(4, width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, n_in, 1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def tiny_encoder(latent_channels: int, midblock_gn: bool) -> nn.Sequential:
    def blocks(gn: bool = False) -> list[nn.Module]:
        return [_Block(64, 64, gn) for _ in range(3)]

    def down() -> nn.Conv2d:
        return _conv(64, 64, stride=2, bias=False)

    return nn.Sequential(
        _conv(3, 64),
        _Block(64, 64),
        down(),
        *blocks(),
        down(),
        *blocks(),
        down(),
        *blocks(midblock_gn),
        _conv(64, latent_channels),
    )


def tiny_decoder(latent_channels: int, midblock_gn: bool) -> nn.Sequential:
    def up() -> list[nn.Module]:
        return [nn.Upsample(scale_factor=2), _conv(64, 64, bias=False)]

    blocks = [_Block(64, 64, midblock_gn) for _ in range(3)]
    return nn.Sequential(
        _Clamp(),
        _conv(latent_channels, 64),
        nn.ReLU(),
        *blocks,
        *up(),
        *(_Block(64, 64) for _ in range(3)),
        *up(),
        *(_Block(64, 64) for _ in range(3)),
        *up(),
        _Block(64, 64),
        _conv(64, 3),
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Autoencoder:
    """A loaded autoencoder: `reconstruct` maps RGB in [0, 1] (NCHW, sides multiples of `factor`) to its decoding."""

    name: str  # a short name, as the manifest records it: the state dicts' prefix (taef2), the hub name, the folder
    kind: str  # taesd or diffusers
    factor: int  # the latent's downscaling: both sides of an input must be multiples of it
    model: nn.Module
    identity: dict[str, Any] = field(default_factory=dict)  # for provenance.json: files and their SHA-256, or hub id

    @torch.inference_mode()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        if self.kind == "taesd":
            return self.model.decoder(self.model.encoder(images)).clamp(0, 1)
        encoded = self.model.encode(images * 2 - 1)
        # KL autoencoders give a distribution: its mode, so a photo always gives the same fake (DC-AE: a latent).
        latent = encoded.latent_dist.mode() if hasattr(encoded, "latent_dist") else encoded.latent
        return ((self.model.decode(latent).sample + 1) / 2).clamp(0, 1)

    def to(self, device: torch.device) -> Autoencoder:
        self.model.to(device)
        return self


def _tiny_files(folder: Path) -> tuple[Path, Path] | None:
    encoders = sorted(folder.glob("*_encoder.pth"))
    if not encoders:
        return None
    if len(encoders) > 1:
        raise AutoencoderError(
            f"autoencoder={folder} holds {len(encoders)} encoders ({', '.join(p.name for p in encoders)}): "
            "keep one <name>_encoder.pth and its <name>_decoder.pth per folder"
        )
    decoder = encoders[0].with_name(encoders[0].name.replace("_encoder.pth", "_decoder.pth"))
    if not decoder.is_file():
        raise AutoencoderError(f"autoencoder={folder} has {encoders[0].name} but no {decoder.name} beside it")
    return encoders[0], decoder


def load_tiny(name: str, encoder_file: Path, decoder_file: Path) -> Autoencoder:
    """A taesd-family autoencoder from its two state dicts; latent width and variant read from their shapes."""
    encoder_state = torch.load(encoder_file, map_location="cpu", weights_only=True)
    decoder_state = torch.load(decoder_file, map_location="cpu", weights_only=True)
    last = max((k for k in encoder_state if k.endswith(".weight")), key=lambda k: int(k.split(".")[0]))
    latent_channels = encoder_state[last].shape[0]
    midblock_gn = any(".pool." in k for k in encoder_state)
    model = nn.Module()
    model.encoder = tiny_encoder(latent_channels, midblock_gn)
    model.decoder = tiny_decoder(latent_channels, midblock_gn)
    try:
        model.encoder.load_state_dict(encoder_state)
        model.decoder.load_state_dict(decoder_state)
    except RuntimeError as err:
        raise AutoencoderError(
            f"autoencoder={name}: {encoder_file.name} and {decoder_file.name} are not a TAESD-family encoder and "
            f"decoder of 8x downscaling ({str(err).splitlines()[0]})"
        ) from None
    identity = {
        "path": str(encoder_file.parent.resolve()),
        "files": {p.name: _sha256(p) for p in (encoder_file, decoder_file)},
        "latent_channels": latent_channels,
    }
    return Autoencoder(encoder_file.name.removesuffix("_encoder.pth"), "taesd", 8, model.eval(), identity)


def load_diffusers(name: str) -> Autoencoder:
    """A diffusers VAE by hub name (`owner/repo`, or `owner/repo/subfolder` for a pipeline's `vae`) or local folder."""
    try:
        from diffusers import AutoModel
    except ImportError:
        raise AutoencoderError(
            f"autoencoder={name} is read with diffusers, which is not installed: pip install -e '.[aligned]'"
        ) from None
    where, subfolder = name, None
    if not Path(name).exists() and name.count("/") >= 2:
        owner, repo, subfolder = name.split("/", 2)
        where = f"{owner}/{repo}"
    try:
        model = AutoModel.from_pretrained(where, subfolder=subfolder, low_cpu_mem_usage=False)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AutoencoderError(f"Could not load the autoencoder {name!r} ({first}). {OFFLINE_HINT}") from None
    if not (hasattr(model, "encode") and hasattr(model, "decode")):
        raise AutoencoderError(f"autoencoder={name} is a {type(model).__name__}, not an autoencoder (no encode/decode)")
    config = model.config
    factor = getattr(model, "spatial_compression_ratio", None) or 2 ** (len(config.block_out_channels) - 1)
    local = Path(name)
    if local.is_dir():
        identity = {
            "path": str(local.resolve()),
            "files": {p.name: _sha256(p) for p in sorted(local.iterdir()) if p.is_file()},
        }
        name = local.resolve().name
    else:
        identity = {"hub": where, "subfolder": subfolder, "commit": getattr(config, "_commit_hash", None)}
    identity["class"] = type(model).__name__
    return Autoencoder(name, "diffusers", int(factor), model.eval(), identity)


def load_autoencoder(name: str) -> Autoencoder:
    """`autoencoder=NAME`: a folder of tiny-autoencoder state dicts, a diffusers folder, or a diffusers hub name."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        tiny = _tiny_files(folder)
        if tiny is not None:
            return load_tiny(name, *tiny)
        if not (folder / "config.json").is_file():
            raise AutoencoderError(
                f"autoencoder={name} holds neither <name>_encoder.pth + <name>_decoder.pth (a TAESD-family "
                "autoencoder) nor config.json (a diffusers VAE saved with save_pretrained)"
            )
        return load_diffusers(str(folder))
    if folder.exists() or "/" not in name or name.startswith((".", "/", "~")):
        raise AutoencoderError(
            f"autoencoder={name}: no such folder, and not a Hugging Face hub name (owner/repo). "
            "Use a folder such as ../shared/weights/taesd, or a hub name such as stabilityai/sd-vae-ft-mse"
        )
    return load_diffusers(name)
