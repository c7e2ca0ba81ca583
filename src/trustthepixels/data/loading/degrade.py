"""Image degradations shared by robust training (random strengths) and robustness evaluation (fixed ones).

torchvision's uint8 tensor operations throughout, applied to the base image (see `transforms`), so that what
a detector is trained to withstand is exactly what it is tested on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as F

# CNNDetection (Wang et al., 2020): Gaussian blur with sigma ~ U[0, 3], JPEG quality ~ U[30, 100].
BLUR_SIGMA = (0.1, 3.0)  # torchvision needs sigma > 0; below 0.1 the kernel is the identity to 8 bits anyway
JPEG_QUALITY = (30, 100)


def blur_kernel(sigma: float) -> int:
    """An odd kernel covering +-3 sigma, as most Gaussian blurs (Pillow, OpenCV's default) do."""
    return 2 * math.ceil(3 * sigma) + 1


def jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    return F.jpeg(image, int(quality))


def blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    return F.gaussian_blur(image, [blur_kernel(sigma)] * 2, [float(sigma)] * 2) if sigma > 0 else image


def downscale(image: torch.Tensor, factor: float) -> torch.Tensor:
    size = [max(1, round(image.shape[-2] * factor)), max(1, round(image.shape[-1] * factor))]
    return F.resize(image, size, InterpolationMode.BICUBIC, antialias=True)


def robust_augmentation(
    blur_prob: float, jpeg_prob: float, sigma: Sequence[float] = BLUR_SIGMA, quality: Sequence[int] = JPEG_QUALITY
) -> T.Compose:
    """CNNDetection's training augmentation: blur, then JPEG, each with its own probability (uint8 CHW)."""
    return T.Compose(
        [
            T.RandomApply([T.GaussianBlur(blur_kernel(max(sigma)), sigma=tuple(sigma))], p=blur_prob),
            T.RandomApply([T.JPEG(quality=tuple(quality))], p=jpeg_prob),
        ]
    )
