"""The azimuthally averaged power spectrum of an image (Durall, Keuper & Keuper, CVPR 2020, "Watch your
up-convolution"): a classic detector that needs no deep model. Up-sampling layers leave periodic traces that
show in the high frequencies; if a logistic regression on these spectra separates a dataset's classes, a CNN
trained on it may be learning the same thing, and users should know before they trust it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trustthepixels.data.sources.decode import open_rgb

BINS = 64


def azimuthal_spectrum(path: Path | str, bins: int = BINS) -> np.ndarray:
    """log power of the 2D Fourier transform of the greyscale image, averaged over rings of equal radial
    frequency: `bins` values from the lowest to the highest frequency (relative to the image's size, so images of
    any size are comparable), the DC term left out and the curve centred on its mean."""
    grey = np.asarray(open_rgb(path).convert("L"), dtype=np.float64)
    power = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean()))) ** 2)
    height, width = power.shape
    y, x = np.indices(power.shape)
    # normalised radial frequency: 1 at the Nyquist limit along each axis
    radius = np.hypot((y - height // 2) / (height / 2), (x - width // 2) / (width / 2))
    inside = (radius > 0) & (radius <= 1)
    ring = np.minimum((radius[inside] * bins).astype(int), bins - 1)
    sums = np.bincount(ring, weights=power[inside], minlength=bins)
    counts = np.bincount(ring, minlength=bins)
    spectrum = sums / np.maximum(counts, 1)
    return spectrum - spectrum.mean()
