"""`prepare_data.py`'s settings, declared once as a structured config (each field's default and what it does):
types checked as the config composes, the fields' rules (and the checksum's below) before anything is downloaded or
written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from trustthepixels.config import CommandSettings, refusal, register_schema, setting
from trustthepixels.data.ingest.published import HF_DATASET, RELEASE_URL
from trustthepixels.data.loading.settings import DataSettings, NearDuplicates
from trustthepixels.data.loading.split import SPLITS
from trustthepixels.errors import ConfigError

_DATA = DataSettings()  # the data group's defaults: real_split's


@dataclass
class RealSplit:
    """data.split, data.calibration_share and data.near_duplicates of a training run on real= (the data group's
    defaults, read from its schema), with prepare_data's seed: the split `real_part` picks its photos from."""

    split: list[float] = setting(
        "three fractions for train, val and test that sum to 1, e.g. [0.8,0.1,0.1]", _DATA.split
    )
    calibration_share: float = setting(
        "the share of val set apart for calibration (0 <= share < 1)", _DATA.calibration_share, low=0, below=1
    )
    near_duplicates: Optional[NearDuplicates] = setting("{phash: 0-64, dhash: 0-64}, or null", _DATA.near_duplicates)


@dataclass
class PrepareSettings(CommandSettings):
    """prepare_data.py's settings, each with its default and what it does."""

    # release: download the published dataset.zip (8000 images). hf: rebuild it from the Hugging Face dataset.
    # aligned: every photo of real= beside its reconstruction by an autoencoder (aligned fakes).
    source: str = setting(
        "release (the published dataset.zip), hf (rebuilt from the Hugging Face dataset) or aligned (photos beside "
        "their reconstructions by an autoencoder)",
        "release",
        choices=("release", "hf", "aligned"),
    )
    # null: data/dataset for release and hf, data/aligned for aligned.
    out: Optional[str] = setting("the folder to write AI/ and Real/ into, or null for the source's default", None)
    # Replace a non-empty `out`; without it an existing dataset is never touched.
    overwrite: bool = setting("true (replace a non-empty out) or false", False)

    # source=release
    url: str = setting("the URL of a dataset.zip", RELEASE_URL)
    # Expected SHA-256 of the zip (null: not checked; the measured one is recorded in out/provenance.json).
    sha256: Optional[str] = setting("the zip's SHA-256 (64 hexadecimal digits), or null", None)
    keep_archive: bool = setting("true or false", False)

    # source=hf: a hub name or a local directory, both read with datasets.load_dataset.
    dataset: str = setting("a Hugging Face dataset name or a local dataset folder", HF_DATASET)
    split: str = setting("a split of that dataset, e.g. train", "train")
    per_class: int = setting("a number of images per class, 1 or more", 4000, low=1)
    seed: int = setting("a whole number", 42)
    label_column: str = setting("the dataset's label column", "label")
    image_column: str = setting("the dataset's image column", "image")
    # Names of the two classes in the dataset's ClassLabel feature (read from its features, never assumed).
    ai_label_name: str = setting("the name of the AI-generated class in the label column, e.g. AiArtData", "AiArtData")
    real_label_name: str = setting("the name of the real class in the label column, e.g. RealArt", "RealArt")
    # Threads decoding and writing the chosen images (null: two per core, at most 16).
    workers: Optional[int] = setting(
        "a number of threads, 1 or more, or null for two per core (at most 16)", None, low=1
    )

    # source=aligned: a folder of real photos (every file below it; a dataset root: its Real/ folder).
    real: Optional[str] = setting("a folder of real photos (searched recursively), or a dataset root", None)
    # Folders of TAESD-family state dicts (<name>_encoder.pth + <name>_decoder.pth: TAEF2 in ../shared/weights/taesd,
    # offline) or diffusers VAEs (a folder from save_pretrained, or a hub name: stabilityai/sd-vae-ft-mse,
    # madebyollin/sdxl-vae-fp16-fix, black-forest-labs/FLUX.1-schnell/vae). Several share the photos in equal
    # parts. prepare_data.yaml sets TAEF2 from the shared folder.
    autoencoder: list[str] = setting(
        "a list of autoencoders: folders (TAESD-family state dicts, or a diffusers VAE) or diffusers hub names, "
        "e.g. autoencoder=[../shared/weights/taesd]",
        [],
    )
    # Only the photos of this part (train, val, calibration, test) of the project's split of real= (a dataset
    # root), split as a training run on it splits it (real_split, seed): an aligned set that holds none of that
    # source's validation or test photos. null: every photo.
    real_part: Optional[str] = setting(
        "train, val, calibration or test (a part of the project's split of real=), or null for every photo",
        None,
        choices=SPLITS,
    )
    real_split: RealSplit = setting("the split settings of real= as a training run on it has them", RealSplit())
    # Both images of a pair are saved alike: png (lossless) or jpeg at `quality`.
    format: str = setting("png or jpeg (both images of a pair are saved the same way)", "png", choices=("png", "jpeg"))
    quality: int = setting("a JPEG quality from 1 to 100", 95, low=1, high=100)
    # Downscale photos whose longer side is larger (Lanczos) before the crop to the autoencoder's multiple of 8.
    max_side: Optional[int] = setting(
        "a side in pixels (8 or more) to downscale larger photos to, or null to keep their size", None, low=8
    )
    batch_size: int = setting("a number of photos per batch, 1 or more", 8, low=1)
    # auto: cuda when there is one, else cpu.
    device: str = setting("auto (cuda when there is one), cpu, cuda or cuda:N", "auto")


def check_prepare_settings(s: PrepareSettings) -> None:
    if s.source == "aligned" and not s.real:
        raise ConfigError("source=aligned needs real=FOLDER: the folder of real photos to reconstruct")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", s.device):
        raise refusal(PrepareSettings, "device", s.device)
    if s.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", s.sha256):
        raise refusal(PrepareSettings, "sha256", s.sha256)


register_schema(None, PrepareSettings, check_prepare_settings, name="prepare_data_schema")
