"""timm backbones with a one-logit head, from the hub or from a local weight file."""

from __future__ import annotations

import difflib
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import timm
import torch
from timm.data import resolve_model_data_config
from timm.models import group_parameters, split_model_name_tag
from torch import nn

from trustthepixels.errors import ConfigError, UserError
from trustthepixels.model import npr, spectral  # noqa: F401  (registers npr_resnet and spectrum_logistic)

log = logging.getLogger(__name__)


class UnknownModelError(UserError, ValueError):
    pass


class WeightsDownloadError(UserError, RuntimeError):
    pass


# Names timm resolves itself, from a hub repository or a local folder (config.json + weights): not registry names.
SOURCE_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


def check_model_name(name: str) -> None:
    """Fail at once on a name timm does not know, suggesting the closest ones (hub and local-dir names pass)."""
    if name.startswith(SOURCE_PREFIXES):
        return
    arch, _ = split_model_name_tag(name)
    if timm.is_model(arch):
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Closest timm models: {', '.join(close)}." if close else ""
    raise UnknownModelError(f"timm has no model '{name}'.{hint} `timm.list_models('*pattern*')` lists them all.")


def resolve_architecture(name: str, model: torch.nn.Module, model_kwargs: dict[str, Any]) -> tuple[str, dict]:
    """The registry architecture and arguments behind an `hf-hub:` or `local-dir:` name (its config.json's
    `architecture` and `model_args`), so that a checkpoint rebuilds the network without the hub or the folder."""
    if not name.startswith(SOURCE_PREFIXES):
        return name, dict(model_kwargs)
    source, _, identifier = name.partition(":")
    if source == "local-dir":
        config = Path(identifier).expanduser() / "config.json"
    else:  # downloaded (or cached) by timm.create_model a moment ago
        from huggingface_hub import hf_hub_download

        config = Path(hf_hub_download(identifier, "config.json"))
    model_args = {k: v for k, v in json.loads(config.read_text()).get("model_args", {}).items() if k != "num_classes"}
    return model.pretrained_cfg["architecture"], {**model_args, **model_kwargs}


def create_backbone(
    name: str,
    pretrained: bool = True,
    weights: str | Path | None = None,
    num_classes: int = 1,
    **kwargs: Any,
) -> torch.nn.Module:
    """`timm.create_model` with `num_classes` outputs.

    `weights` is a local file (safetensors or a PyTorch state dict with timm's keys), loaded through timm's
    own pretrained path, so the classifier is replaced and ViT position embeddings are resampled as needed.
    Without it, `pretrained=True` downloads from the Hugging Face hub the way timm does.
    """
    check_model_name(name)
    if weights is not None:
        weights = Path(weights).expanduser()
        if not weights.is_file():
            raise ConfigError(f"model.weights={weights} is not a file: give the path of a weight file, or null")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(weights))
        pretrained = True
    offline = pretrained and weights is None and not ensure_hub_or_offline()
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    except (OSError, RuntimeError) as err:
        if pretrained and weights is None and _looks_like_network_error(err):
            why = "offline, and they are not in the local cache" if offline else str(err)
            raise WeightsDownloadError(
                f"Could not get pretrained weights for '{name}' ({why}). Offline, pass a local file with "
                "model.weights=PATH (see ../shared/weights), or train from scratch with model.pretrained=false. "
                "A complete offline run (local weights and images): python train.py experiment=real_vs_ai_lite0"
            ) from err
        raise
    head = model.get_classifier()
    if isinstance(head, torch.nn.Linear):
        # A zero head starts every image at P(AI) = 0.5 (loss ln 2). timm's default init for some families
        # (EfficientNet's uniform(1/sqrt(fan_out))) gives a 1-output head logits in the tens.
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    return model


def ensure_hub_or_offline(timeout_s: float = 5.0) -> bool:
    """One request to the Hugging Face hub, without retries. If it fails, switch huggingface_hub to offline mode
    for this process (weights then come from the local cache, or fail at once) and say so, instead of letting every
    download retry with backoff for most of a minute. Returns whether the hub answered."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        with urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True  # it answered (an error status is still an answer)
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        log.warning(
            "The Hugging Face hub (%s) is unreachable (%s): offline mode, weights only from the local cache",
            constants.ENDPOINT,
            reason,
        )
        os.environ["HF_HUB_OFFLINE"] = "1"
        constants.HF_HUB_OFFLINE = True
        return False


def _looks_like_network_error(err: BaseException) -> bool:
    text = f"{type(err).__name__} {err}".lower()
    return any(word in text for word in ("connect", "resolve", "offline", "hub", "timed out", "network", "http"))


def backbone_data_config(model: torch.nn.Module) -> dict[str, Any]:
    """timm's preprocessing for `model`, with the input size the model was actually built at."""
    config = resolve_model_data_config(model)
    # A ViT built with img_size=224 still carries its pretrained config's size (518 for DINOv2).
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if built is not None:
        config["input_size"] = (3, *tuple(built))
    return config


def freeze_all_but_last(backbone: nn.Module, blocks: int) -> list[nn.Module]:
    """Freeze every parameter but those of the last `blocks` blocks and the classifier, the blocks as timm's
    coarse `group_matcher` counts them (stages of a ResNet or EfficientNet, blocks of a ViT). Returns the
    modules left with no trainable parameter, which the caller keeps in eval mode."""
    if not hasattr(backbone, "group_matcher"):
        raise ConfigError(f"model.trainable_blocks: {type(backbone).__name__} does not say what its blocks are")
    groups = list(group_parameters(backbone, backbone.group_matcher(coarse=True)).values())
    trainable = {name for group in groups[-(blocks + 1) :] for name in group}  # the last group: the classifier
    for name, parameter in backbone.named_parameters():
        parameter.requires_grad_(name in trainable)
    return [
        module
        for module in backbone.modules()
        if any(True for _ in module.parameters(recurse=False))
        and not any(p.requires_grad for p in module.parameters(recurse=False))
    ]
