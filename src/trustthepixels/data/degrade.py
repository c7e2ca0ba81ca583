"""Image degradations shared by robust training (random strengths) and robustness evaluation (fixed ones).

Pillow throughout, so that what a detector is trained to withstand is exactly what it is tested on.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence

import torch
from PIL import Image, ImageFilter


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(quality))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def blur(image: Image.Image, sigma: float) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=float(sigma))) if sigma > 0 else image  # radius = sigma


def downscale(image: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.BICUBIC)


class RandomDegradation:
    """CNNDetection's training augmentation (Wang et al., 2020): Gaussian blur with sigma uniform in
    `sigma`, then JPEG at a quality uniform in `quality`, each applied with its own probability. PIL in, PIL out."""

    def __init__(
        self,
        blur_prob: float = 0.5,
        jpeg_prob: float = 0.5,
        sigma: Sequence[float] = (0.0, 3.0),
        quality: Sequence[int] = (30, 100),
    ):
        self.blur_prob, self.jpeg_prob = blur_prob, jpeg_prob
        self.sigma, self.quality = tuple(sigma), tuple(quality)

    def __call__(self, image: Image.Image | torch.Tensor) -> Image.Image:
        if isinstance(image, torch.Tensor):  # uint8 CHW from the pixel cache
            image = Image.fromarray(image.permute(1, 2, 0).numpy())
        if random.random() < self.blur_prob:
            image = blur(image, random.uniform(*self.sigma))
        if random.random() < self.jpeg_prob:
            image = jpeg(image, random.randint(*self.quality))
        return image

    def __repr__(self) -> str:
        return (
            f"RandomDegradation(blur_prob={self.blur_prob}, sigma={self.sigma}, "
            f"jpeg_prob={self.jpeg_prob}, quality={self.quality})"
        )
