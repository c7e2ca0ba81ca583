"""The `data` settings, declared once: the structured config the `data` group composes onto and the DataModule keeps.
OmegaConf checks every type as the config composes (or as the DataModule is built from Python), `config.validated`
each field's rules and `check_data_settings` what only code can say. Each refusal is one short message naming the
setting and what it takes: the `use` of its field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from trustthepixels.config import refusal, register_schema, setting
from trustthepixels.data.audit.dedup import DEFAULT_DHASH_DISTANCE, DEFAULT_PHASH_DISTANCE
from trustthepixels.data.ingest.published import RELEASE_URL
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
    phash: int = setting(HAMMING, DEFAULT_PHASH_DISTANCE, low=0, high=64)
    dhash: int = setting(HAMMING, DEFAULT_DHASH_DISTANCE, low=0, high=64)


@dataclass
class DataSettings:
    """The `data` group: each setting's default and what it does. configs/data/default.yaml wires the ones that
    follow the run (its paths, seed and machine); `python train.py --cfg job` prints them all."""

    _target_: str = DATAMODULE
    # A folder with AI/ and Real/ (or AiArtData/ and RealArt/) subfolders; label 1 = AI. Several sources: a list
    # of such folders, or a mapping name -> folder ('data.root={a: PATH1, b: PATH2}'): split per source and class,
    # val/test metrics per source too (val/auroc/a).
    root: Any = setting("an AI/ + Real/ folder, a list of them, or a mapping name -> folder")
    # When root does not exist, download the published 8000-image dataset.zip into it (see prepare_data.py).
    download: bool = setting("true (fetch the published dataset when root is missing) or false", True)
    url: str = setting("the URL of a dataset zip", RELEASE_URL)
    # Per device. The data group sets it by the machine: 32 on a CPU; on a GPU 256 (128 on GPUs under 32 GiB, 64
    # under 16), the fastest on an H200 for every backbone measured (docs/speed.md). model.lr_batch scales the
    # learning rate to it.
    batch_size: int = setting("a whole number of images per batch, 1 or more", 32, low=1)
    # null: one worker per core but one (at most 32): a GPU needs them all when it reads JPEG files.
    num_workers: Optional[int] = setting("0 (no worker processes), a positive number or null", None, low=0)
    # train / val / test fractions, stratified by class, fixed by the seed and the files' relative paths.
    split: list[float] = setting(
        "three non-negative fractions for train, val and test that sum to 1, e.g. data.split=[0.8,0.1,0.1]",
        [0.8, 0.1, 0.1],
    )
    # The share of the validation part (each source and class, near-duplicate groups whole) set apart as the
    # calibration part: validation chooses the checkpoint and stops training, the calibration part alone fits the
    # threshold, temperature, prediction sets and familiarity cutoff, on images that chose nothing. Train and test
    # do not change. 0: no calibration part, validation calibrates too (for tiny sets; the promise is approximate).
    calibration_share: float = setting(
        "the share of the validation part kept apart to calibrate on (0 <= share < 1; 0: validation calibrates)",
        0.5,
        low=0,
        below=1,
    )
    # k-fold cross-validation: python train.py -m data.folds=5 'data.fold=range(5)'. Fold `fold` is the test split,
    # validation is carved from the other folds at val / (train + val) of `split`. null: the plain split above.
    folds: Optional[int] = setting(FOLDS, None)
    fold: int = setting(FOLDS, 0)
    # At most this many training images per source and class (a seeded choice; val and test untouched): balances
    # a union of sources of very different sizes and bounds a benchmark row's cost. null: all of them.
    max_train_per_class: Optional[int] = setting(
        "a number of training images per source and class (1 or more), or null for all of them", None, low=1
    )
    seed: int = setting("a whole number", 42)  # the data group sets it to the run's seed
    # null: the backbone's timm input size (224 for most); any value overrides it.
    image_size: Optional[int] = setting("a side in pixels (8 or more), or null", None, low=8)
    # The resampling filter and timm's crop_pct (eval: resize the shorter side to size / crop_pct, centre-crop
    # size); null: the backbone's own (lite0: bicubic, 0.875). Both stored in the checkpoint.
    interpolation: Optional[str] = setting(
        f"one of {', '.join(INTERPOLATIONS)}, or null for the backbone's", None, choices=INTERPOLATIONS
    )
    crop_pct: Optional[float] = setting(
        "the evaluation crop's share of the resized side (0 < crop_pct <= 1), or null for the backbone's",
        None,
        above=0,
        high=1,
    )
    # shorter: resize the shorter side to size / crop_pct, then crop (timm's recipe). none: no resampling at all,
    # training takes random crops of image_size from the file's own pixels and evaluation a centre crop
    # (CNNDetection, NPR: resampling erases the traces generators leave). Stored in the checkpoint.
    resize: str = setting(
        "shorter (resize, then crop) or none (crops of the native pixels)", "shorter", choices=RESIZES
    )
    # RandomResizedCrop area range for training (resize=shorter); eval is resize + center crop (timm's crop_pct).
    crop_scale: list[float] = setting("[low, high] with 0 < low <= high <= 1", [0.5, 1.0], above=0, high=1)
    # robust: CNNDetection's augmentation on top, Gaussian blur (sigma 0-3) and JPEG (quality 30-100), each with
    # its probability. Makes a detector hold up under re-compression and resizing (see eval.py's robustness table).
    augment: str = setting("none or robust", "none", choices=("none", "robust"))
    blur_prob: float = setting("a probability between 0 and 1", 0.5, low=0, high=1)
    jpeg_prob: float = setting("a probability between 0 and 1", 0.5, low=0, high=1)
    # true: the photo and the reconstruction of each pair of an aligned set (prepare_data.py source=aligned) get
    # the same crop, flip, blur and JPEG re-compression, side by side in the same batch (Rajan, Lee et al., ICLR
    # 2025: the detector can then only tell them apart by what the decoder left). Needs an even batch_size.
    pair_augment: bool = setting(
        "true (an aligned set's photo and its reconstruction augmented alike, in one "
        "batch; needs an even data.batch_size) or false",
        False,
    )
    # Images with a shorter side below this are skipped (and listed in skipped.csv).
    min_image_side: int = setting("a side in pixels, 1 or more", 8, low=1)
    # Near-duplicates (pHash and dHash Hamming distances within these limits) stay in one split; null: off.
    near_duplicates: Optional[NearDuplicates] = setting(
        "{phash: 0-64, dhash: 0-64} (Hamming distances), or null to switch the search off", NearDuplicates()
    )
    # Per-file fingerprints (validity, size, perceptual hashes), so later runs decode nothing at setup. The data
    # group sets it to data/cache; null: none kept.
    cache_dir: Optional[str] = setting("a folder for the file fingerprints and pixel cache, or null", None)
    # Pixel cache in cache_dir: each image decoded once into its base image (shorter side = size / crop_pct) and
    # reused every epoch, run and sweep job. A speed setting only: the pixels are the same with it off.
    cache: bool = setting("true or false", True)
    # JPEG DCT scaling when a file is 2x+ larger than needed (~5x faster decoding of large JPEGs). It changes the
    # pixels, so it is part of the preprocessing: stored in the checkpoint, and eval.py and predict.py follow it.
    jpeg_draft: bool = setting("true or false", True)
    # With model.freeze_backbone=true: backbone features computed once per (weights, preprocessing, image) and
    # reused by every epoch, run and trial (evaluation transform for all splits, the linear-probe protocol).
    feature_cache: bool = setting("true or false", False)
    # Where split.csv and skipped.csv go: the data group sets the run's folder; null: not written.
    output_dir: Optional[str] = setting("the run's folder, or null", None)


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
