"""Image transforms from the backbone's timm data config: a PIL image or a uint8 CHW tensor in, a uint8 CHW
tensor out.

Everything after decoding runs on uint8 tensors (torchvision's fast antialiased resize), so images from the
pixel cache never pass through PIL. Normalisation is not done here: the model normalises on its own device
(see `DetectorModule.forward`), so workers ship 4x smaller uint8 batches and a checkpoint carries its own
mean and std.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from trustthepixels.data.degrade import RandomDegradation


def image_size(data_config: dict[str, Any]) -> int:
    return int(data_config["input_size"][-1])


def build_transform(
    data_config: dict[str, Any],
    train: bool,
    crop_scale: Sequence[float] = (0.5, 1.0),
    augment: str = "none",
    blur_prob: float = 0.5,
    jpeg_prob: float = 0.5,
) -> T.Compose:
    """Train: (blur and JPEG with augment="robust", on the full image as CNNDetection does) random resized
    crop; the random horizontal flip is done on the model's device. Eval: resize to size / crop_pct, then
    center crop."""
    if augment not in ("none", "robust"):
        raise ValueError(f"data.augment must be 'none' or 'robust', not {augment!r}")
    size = image_size(data_config)
    interpolation = InterpolationMode(data_config.get("interpolation", "bicubic"))
    steps = [RandomDegradation(blur_prob, jpeg_prob)] if train and augment == "robust" else []
    steps.append(T.PILToTensor())  # tensors (from the pixel cache) pass through unchanged
    if train:  # the horizontal flip happens on the device, in DetectorModule.on_after_batch_transfer
        steps.append(T.RandomResizedCrop(size, scale=tuple(crop_scale), interpolation=interpolation, antialias=True))
    else:
        resize = math.floor(size / data_config.get("crop_pct", 1.0))
        steps += [T.Resize(resize, interpolation=interpolation, antialias=True), T.CenterCrop(size)]
    return T.Compose(steps)
