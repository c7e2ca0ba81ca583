"""`prepare_data.py`'s settings as a structured config (configs/prepare_data.yaml says what each does): types checked
as the config composes, the fields' rules (and the checksum's below) before anything is downloaded or written."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from trustthepixels.config import CommandSettings, refusal, register_schema, setting
from trustthepixels.data.loading.settings import NearDuplicates
from trustthepixels.data.loading.split import SPLITS
from trustthepixels.errors import ConfigError


@dataclass
class RealSplit:
    """data.split, data.calibration_share and data.near_duplicates of a training run on real= (the data group's
    defaults), with prepare_data's seed: the split `real_part` picks its photos from."""

    split: list[float] = setting("three fractions for train, val and test that sum to 1, e.g. [0.8,0.1,0.1]")
    calibration_share: float = setting("the share of val set apart for calibration (0 <= share < 1)", low=0, below=1)
    near_duplicates: Optional[NearDuplicates] = setting("{phash: 0-64, dhash: 0-64}, or null")


@dataclass
class PrepareSettings(CommandSettings):
    source: str = setting(
        "release (the published dataset.zip), hf (rebuilt from the Hugging Face dataset) or aligned (photos beside "
        "their reconstructions by an autoencoder)",
        choices=("release", "hf", "aligned"),
    )
    out: Optional[str] = setting("the folder to write AI/ and Real/ into, or null for the source's default")
    overwrite: bool = setting("true (replace a non-empty out) or false")
    url: str = setting("the URL of a dataset.zip")
    sha256: Optional[str] = setting("the zip's SHA-256 (64 hexadecimal digits), or null")
    keep_archive: bool = setting("true or false")
    dataset: str = setting("a Hugging Face dataset name or a local dataset folder")
    split: str = setting("a split of that dataset, e.g. train")
    per_class: int = setting("a number of images per class, 1 or more", low=1)
    seed: int = setting("a whole number")
    label_column: str = setting("the dataset's label column")
    image_column: str = setting("the dataset's image column")
    ai_label_name: str = setting("the name of the AI-generated class in the label column, e.g. AiArtData")
    real_label_name: str = setting("the name of the real class in the label column, e.g. RealArt")
    workers: Optional[int] = setting("a number of threads, 1 or more, or null for two per core (at most 16)", low=1)
    real: Optional[str] = setting("a folder of real photos (searched recursively), or a dataset root")
    autoencoder: list[str] = setting(
        "a list of autoencoders: folders (TAESD-family state dicts, or a diffusers VAE) or diffusers hub names, "
        "e.g. autoencoder=[../shared/weights/taesd]"
    )
    real_part: Optional[str] = setting(
        "train, val, calibration or test (a part of the project's split of real=), or null for every photo",
        choices=SPLITS,
    )
    real_split: RealSplit = setting("the split settings of real= as a training run on it has them")
    format: str = setting("png or jpeg (both images of a pair are saved the same way)", choices=("png", "jpeg"))
    quality: int = setting("a JPEG quality from 1 to 100", low=1, high=100)
    max_side: Optional[int] = setting(
        "a side in pixels (8 or more) to downscale larger photos to, or null to keep their size", low=8
    )
    batch_size: int = setting("a number of photos per batch, 1 or more", low=1)
    device: str = setting("auto (cuda when there is one), cpu, cuda or cuda:N")


def check_prepare_settings(s: PrepareSettings) -> None:
    if s.source == "aligned" and not s.real:
        raise ConfigError("source=aligned needs real=FOLDER: the folder of real photos to reconstruct")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", s.device):
        raise refusal(PrepareSettings, "device", s.device)
    if s.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", s.sha256):
        raise refusal(PrepareSettings, "sha256", s.sha256)


register_schema(None, PrepareSettings, check_prepare_settings, name="prepare_data_schema")
