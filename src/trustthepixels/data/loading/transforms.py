"""The pixels the model sees: one definition shared by training, validation, `eval.py`, `predict.py` and export.

    file --decode (open_rgb; JPEG DCT scaling when `jpeg_draft`)--> RGB
         --resize the shorter side to `base_side` (never up)--> the *base image* (what the pixel cache stores)
         --train: [robust degradation] + random resized crop / eval: [perturbation] + timm's eval resize + crop
         --> uint8 CHW tensor at the model's input size

Everything that changes pixels is in `Preprocessing` (stored in every checkpoint's data config), so a speed
setting (the pixel cache, worker count) can never change what a model is trained or evaluated on: the cache
stores exactly the base image `load_pixels` returns. Degradations, for robust training and for robustness
evaluation alike, act on the base image: the resolution the detector works at.

Normalisation is not done here: the model normalises on its own device (see `DetectorModule`), so workers ship
4x smaller uint8 batches and a checkpoint carries its own mean and std. Why not `timm.data.create_transform`:
it is PIL-based and ends in ToNumpy; these transforms run on the uint8 tensors the cache hands out, and follow
timm's eval rule (`floor(size / crop_pct)`, shorter side for square inputs, both sides otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

from trustthepixels.data.ingest.decode import ImageSource, decode_image
from trustthepixels.data.loading.degrade import robust_augmentation


@dataclass(frozen=True)
class Preprocessing:
    height: int
    width: int
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    jpeg_draft: bool = False  # JPEG DCT scaling for files 2x+ larger than needed: ~5x faster, not the same pixels
    # False (data.resize=none): the base image is the file's own pixels; training takes random crops of the
    # model's size from them and evaluation a centre crop: no resampling erases generator traces (CNNDetection, NPR).
    resize: bool = True

    @classmethod
    def from_data_config(cls, data_config: dict[str, Any]) -> Preprocessing:
        _, height, width = data_config["input_size"]
        return cls(
            int(height),
            int(width),
            float(data_config.get("crop_pct") or 1.0),
            str(data_config.get("interpolation") or "bicubic"),
            bool(data_config.get("jpeg_draft", False)),
            data_config.get("resize", "shorter") != "none",
        )

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def eval_resize(self) -> list[int]:
        """timm's eval resize: the shorter side for square inputs, both sides otherwise."""
        if self.height == self.width:
            return [math.floor(self.height / self.crop_pct)]
        return [math.floor(self.height / self.crop_pct), math.floor(self.width / self.crop_pct)]

    def describe(self) -> str:
        """Evaluation's steps from a decoded RGB image to the model's input, in words (ONNX metadata, model card)."""
        crop = f"center-crop {self.height} x {self.width}"
        if not self.resize:
            return f"no resize: {crop} of the image's own pixels (zero padding where it is smaller)"
        side = "shorter side" if self.height == self.width else "sides"
        return f"resize the {side} to {' x '.join(map(str, self.eval_resize))} ({self.interpolation}), then {crop}"

    @property
    def base_side(self) -> int:
        """Shorter side of the base image: enough for every later resize, so none of them upscales it."""
        return math.floor(max(self.height, self.width) / self.crop_pct)

    @property
    def key(self) -> str:
        """Everything that decides the base image's pixels: names its entries in the pixel cache."""
        if not self.resize:
            return "native"
        return f"s{self.base_side}-{self.interpolation}-{'draft' if self.jpeg_draft else 'full'}"

    @property
    def mode(self) -> InterpolationMode:
        return InterpolationMode(self.interpolation)


def _draft_size(pre: Preprocessing):
    def size(full: tuple[int, int]) -> tuple[int, int] | None:
        scale = pre.base_side / min(full)
        if not pre.resize or not pre.jpeg_draft or scale > 0.5:
            return None
        return int(full[0] * scale) + 1, int(full[1] * scale) + 1

    return size


def load_pixels(path: ImageSource, pre: Preprocessing, min_side: int = 1) -> torch.Tensor:
    """The base image of `path` (a file, or an open binary file: uint8 CHW), or `ImageDecodeError` saying why
    the file cannot be used."""
    image, _ = decode_image(path, min_side, _draft_size(pre))
    pixels = F.pil_to_tensor(image)
    if pre.resize and min(pixels.shape[1:]) > pre.base_side:
        pixels = F.resize(pixels, [pre.base_side], pre.mode, antialias=True)
    return pixels


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
    """Base image -> model input. Train: (blur and JPEG with augment="robust", CNNDetection's augmentation)
    random resized crop; the random horizontal flip is done on the model's device. Eval: resize, center crop.
    With data.resize=none: a random crop (train) or a centre crop (eval) of the file's own pixels."""
    if augment not in ("none", "robust"):
        raise ValueError(f"data.augment must be 'none' or 'robust', not {augment!r}")
    pre = Preprocessing.from_data_config(data_config)
    steps: list = [T.PILToTensor()]  # tensors (base images) pass through unchanged
    if train and augment == "robust":
        steps.append(robust_augmentation(blur_prob, jpeg_prob))
    if not pre.resize:  # native pixels: crops only (zero padding for an image smaller than the crop)
        steps.append(T.RandomCrop(pre.size, pad_if_needed=True) if train else T.CenterCrop(pre.size))
    elif train:  # the horizontal flip happens on the device, in DetectorModule.random_flip
        steps.append(T.RandomResizedCrop(pre.size, scale=tuple(crop_scale), interpolation=pre.mode, antialias=True))
    else:
        steps += [T.Resize(pre.eval_resize, interpolation=pre.mode, antialias=True), T.CenterCrop(pre.size)]
    return T.Compose(steps)
