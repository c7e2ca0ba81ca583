"""The `data` settings as a structured config: OmegaConf checks every type as the config composes (or as the
DataModule is built from Python), `config.validated` each field's rules and `check_data_settings` what only code can
say. Each refusal is one short message naming the setting and what it takes: the `use` of its field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from trustthepixels.config import refusal, register_schema, setting
from trustthepixels.data.loading.split import check_fractions
from trustthepixels.errors import ConfigError

DATAMODULE = "trustthepixels.data.loading.datamodule.ImageFolderDataModule"
# The resampling filters a run may choose; timm's backbones default to bicubic or bilinear. nearest at a whole-number
# scale copies each pixel into a block and invents no new values: small images (CIFAKE's 32 px) keep their exact
# pixels, and the traces a generator left in them, at the backbone's larger input.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
RESIZES = ("shorter", "none")
HAMMING = "a Hamming distance from 0 to 64"
FOLDS = (
    "data.folds=K (2 or more) and data.fold from 0 to K-1, e.g. python train.py -m data.folds=5 'data.fold=range(5)'"
)


@dataclass
class NearDuplicates:
    phash: int = setting(HAMMING, low=0, high=64)
    dhash: int = setting(HAMMING, low=0, high=64)


@dataclass
class DataSettings:
    """configs/data/default.yaml says what each setting does; its values are the defaults."""

    _target_: str = DATAMODULE
    root: Any = setting("an AI/ + Real/ folder, a list of them, or a mapping name -> folder")
    download: bool = setting("true (fetch the published dataset when root is missing) or false")
    url: str = setting("the URL of a dataset zip")
    batch_size: int = setting("a whole number of images per batch, 1 or more", low=1)
    num_workers: Optional[int] = setting("0 (no worker processes), a positive number or null", low=0)
    split: list[float] = setting(
        "three non-negative fractions for train, val and test that sum to 1, e.g. data.split=[0.8,0.1,0.1]"
    )
    calibration_share: float = setting(
        "the share of the validation part kept apart to calibrate on (0 <= share < 1; 0: validation calibrates)",
        low=0,
        below=1,
    )
    folds: Optional[int] = setting(FOLDS)
    fold: int = setting(FOLDS)
    max_train_per_class: Optional[int] = setting(
        "a number of training images per source and class (1 or more), or null for all of them", low=1
    )
    seed: int = setting("a whole number")
    image_size: Optional[int] = setting("a side in pixels (8 or more), or null", low=8)
    interpolation: Optional[str] = setting(
        f"one of {', '.join(INTERPOLATIONS)}, or null for the backbone's", choices=INTERPOLATIONS
    )
    crop_pct: Optional[float] = setting(
        "the evaluation crop's share of the resized side (0 < crop_pct <= 1), or null for the backbone's",
        above=0,
        high=1,
    )
    resize: str = setting("shorter (resize, then crop) or none (crops of the native pixels)", choices=RESIZES)
    crop_scale: list[float] = setting("[low, high] with 0 < low <= high <= 1", above=0, high=1)
    augment: str = setting("none or robust", choices=("none", "robust"))
    blur_prob: float = setting("a probability between 0 and 1", low=0, high=1)
    jpeg_prob: float = setting("a probability between 0 and 1", low=0, high=1)
    pair_augment: bool = setting(
        "true (an aligned set's photo and its reconstruction augmented alike, in one "
        "batch; needs an even data.batch_size) or false"
    )
    min_image_side: int = setting("a side in pixels, 1 or more", low=1)
    near_duplicates: Optional[NearDuplicates] = setting(
        "{phash: 0-64, dhash: 0-64} (Hamming distances), or null to switch the search off"
    )
    cache_dir: Optional[str] = setting("a folder for the file fingerprints and pixel cache, or null")
    cache: bool = setting("true or false")
    jpeg_draft: bool = setting("true or false")
    feature_cache: bool = setting("true or false")
    output_dir: Optional[str] = setting("the run's folder, or null")


def check_data_settings(s: DataSettings) -> None:
    """What the fields' rules cannot say, before any image is read."""
    check_fractions(s.split)
    if len(s.crop_scale) != 2 or s.crop_scale[0] > s.crop_scale[1]:
        raise refusal(DataSettings, "crop_scale", s.crop_scale, "data.")
    if s.pair_augment and s.batch_size % 2:
        raise ConfigError(
            f"data.pair_augment=true needs an even data.batch_size (pairs share a batch), not {s.batch_size}: "
            f"e.g. data.batch_size={s.batch_size + 1}"
        )
    if s.folds is not None and not (s.folds >= 2 and 0 <= s.fold < s.folds):
        raise ConfigError(f"data.folds={s.folds!r}, data.fold={s.fold!r}: use {FOLDS}")


register_schema("data", DataSettings, check_data_settings)
