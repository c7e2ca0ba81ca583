"""The `data` settings, checked before any image is read: one short message naming the setting and what it takes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trustthepixels.data.loading.split import check_fractions
from trustthepixels.data.loading.transforms import INTERPOLATIONS
from trustthepixels.errors import ConfigError


def check_data_settings(
    batch_size: Any,
    num_workers: Any,
    split: Any,
    image_size: Any,
    crop_scale: Any,
    augment: Any,
    resize: Any,
    blur_prob: Any,
    jpeg_prob: Any,
    min_image_side: Any,
    near_duplicates: Any,
    folds: Any = None,
    fold: Any = 0,
    max_train_per_class: Any = None,
    interpolation: Any = None,
    crop_pct: Any = None,
) -> None:
    """Refuse settings that cannot work before any image is read, naming the setting and what it takes."""

    def is_int(value: Any, low: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    if not is_int(batch_size, 1):
        raise ConfigError(f"data.batch_size={batch_size!r}: use a whole number of images per batch, 1 or more")
    if num_workers is not None and not is_int(num_workers, 0):
        raise ConfigError(f"data.num_workers={num_workers!r}: use 0 (no worker processes), a positive number or null")
    check_fractions(split)
    if image_size is not None and not is_int(image_size, 8):
        raise ConfigError(f"data.image_size={image_size!r}: use a side in pixels (8 or more), or null")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise ConfigError(
            f"data.interpolation={interpolation!r}: use one of {', '.join(INTERPOLATIONS)}, or null for the backbone's"
        )
    if crop_pct is not None and (
        isinstance(crop_pct, bool) or not isinstance(crop_pct, int | float) or not 0 < crop_pct <= 1
    ):
        raise ConfigError(
            f"data.crop_pct={crop_pct!r}: use the evaluation crop's share of the resized side (0 < crop_pct <= 1), "
            "or null for the backbone's"
        )
    if (
        not isinstance(crop_scale, Sequence)
        or len(crop_scale) != 2
        or not all(isinstance(v, int | float) for v in crop_scale)
        or not 0 < crop_scale[0] <= crop_scale[1] <= 1
    ):
        raise ConfigError(f"data.crop_scale={list(crop_scale)!r}: use [low, high] with 0 < low <= high <= 1")
    if resize not in ("shorter", "none"):
        raise ConfigError(
            f"data.resize={resize!r}: use shorter (resize, then crop) or none (crops of the native pixels)"
        )
    if augment not in ("none", "robust"):
        raise ConfigError(f"data.augment={augment!r}: use none or robust")
    for name, p in (("data.blur_prob", blur_prob), ("data.jpeg_prob", jpeg_prob)):
        if not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ConfigError(f"{name}={p!r}: use a probability between 0 and 1")
    if folds is not None and not (is_int(folds, 2) and is_int(fold, 0) and fold < folds):
        raise ConfigError(
            f"data.folds={folds!r}, data.fold={fold!r}: use data.folds=K (2 or more) and data.fold from 0 to K-1, "
            "e.g. python train.py -m data.folds=5 'data.fold=range(5)'"
        )
    if max_train_per_class is not None and not is_int(max_train_per_class, 1):
        raise ConfigError(
            f"data.max_train_per_class={max_train_per_class!r}: use a number of training images per source and "
            "class (1 or more), or null for all of them"
        )
    if not is_int(min_image_side, 1):
        raise ConfigError(f"data.min_image_side={min_image_side!r}: use a side in pixels, 1 or more")
    if near_duplicates is not None and (
        not isinstance(near_duplicates, Mapping)
        or set(near_duplicates) != {"phash", "dhash"}
        or not all(is_int(v, 0) and v <= 64 for v in near_duplicates.values())
    ):
        raise ConfigError(
            f"data.near_duplicates={near_duplicates!r}: use "
            "{phash: 0-64, dhash: 0-64} (Hamming distances), or null to switch the search off"
        )
