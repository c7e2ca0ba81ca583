"""Estimate a JPEG's encoder quality from its quantisation table (the audit reports it per class: a quality
gap between AI and real images is a shortcut a model can learn)."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from trustthepixels.data.ingest.decode import ImageDecodeError, opened


@lru_cache(maxsize=1)
def _reference_tables() -> np.ndarray:
    """Pillow's (libjpeg's) luminance quantisation table at each quality 1..100, in Pillow's own order."""
    tables = []
    for quality in range(1, 101):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, "JPEG", quality=quality)
        tables.append(Image.open(buffer).quantization[0])
    return np.array(tables, dtype=np.float64)


def jpeg_quality(path: Path) -> int | None:
    """The libjpeg quality whose luminance table is closest to the file's (an estimate for other encoders)."""
    try:
        with opened(path) as img:
            if img.format != "JPEG" or not getattr(img, "quantization", None):
                return None
            table = np.array(img.quantization[0], dtype=np.float64)
    except ImageDecodeError:
        return None
    return int(np.abs(_reference_tables() - table).sum(axis=1).argmin()) + 1
