"""The azimuthally averaged power spectrum of an image (Durall, Keuper & Keuper, CVPR 2020, "Watch your
up-convolution"): a classic detector that needs no deep model. Up-sampling layers leave periodic traces that
show in the high frequencies; if a logistic regression on these spectra separates a dataset's classes, a CNN
trained on it may be learning the same thing, and users should know before they trust it.

One implementation (torch) serves the audit's baseline and `model=spectral`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trustthepixels.data.ingest.decode import open_rgb

BINS = 64
# ITU-R 601-2 luma, as Pillow's convert("L")
LUMA = (0.299, 0.587, 0.114)


def radial_power_profile(grey: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """(..., H, W) greyscale (0-255) -> (..., bins): log power of the 2D Fourier transform, averaged over rings
    of equal radial frequency from the lowest to the highest (relative to the image's size, so images of any
    size compare), the DC term left out and each curve centred on its mean. Written with ops ONNX exports
    (no boolean indexing, no complex abs), so `model=spectral` exports like any other model."""
    height, width = grey.shape[-2:]
    centred = grey - grey.mean(dim=(-2, -1), keepdim=True)
    spectrum = torch.fft.fft2(centred)
    power = torch.log1p(spectrum.real**2 + spectrum.imag**2).flatten(-2)
    # normalised radial frequency of each coefficient: 1 at the Nyquist limit along each axis
    fy, fx = _frequencies(height, grey) * 2, _frequencies(width, grey) * 2
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).flatten()
    inside = (radius > 0) & (radius <= 1)
    ring = torch.where(inside, torch.clamp((radius * bins).long(), max=bins - 1), bins)  # bin `bins`: left out
    sums = torch.zeros(*power.shape[:-1], bins + 1, dtype=power.dtype, device=power.device)
    sums = sums.index_add(-1, ring, power)[..., :bins]
    counts = torch.zeros(bins + 1, dtype=power.dtype, device=power.device).index_add(0, ring, torch.ones_like(radius))
    profile = sums / counts[:bins].clamp(min=1)
    return profile - profile.mean(dim=-1, keepdim=True)


def _frequencies(n: int, like: torch.Tensor) -> torch.Tensor:
    """torch.fft.fftfreq(n), spelled with arange (which ONNX exports): 0, 1, ..., then the negative ones, / n."""
    k = torch.arange(n, device=like.device, dtype=like.dtype)
    return torch.where(k < (n + 1) // 2, k, k - n) / n


def azimuthal_spectrum(path: Path | str, bins: int = BINS) -> np.ndarray:
    """`radial_power_profile` of an image file's greyscale version (float64)."""
    grey = torch.from_numpy(np.asarray(open_rgb(path).convert("L"), dtype=np.float64))
    return radial_power_profile(grey, bins).numpy()
