"""A map-style dataset over scanned image files, read from the pre-resized pixel cache when there is one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset

from trustthepixels.data.decode import ImageDecodeError, open_rgb
from trustthepixels.data.pixel_cache import PixelCache
from trustthepixels.data.scan import Sample


class ImageFileDataset(Dataset):
    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable,
        min_side: int = 1,
        cache: PixelCache | None = None,
        sha256: Sequence[str] | None = None,
    ):
        self.samples = list(samples)
        self.transform = transform
        self.min_side = min_side
        self.cache = cache
        self.sha256 = list(sha256) if sha256 is not None else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        if self.cache is not None:  # HWC uint8 from the memory map, as a CHW tensor: no PIL round trip
            pixels = torch.from_numpy(self.cache.get(self.sha256[index]).copy()).permute(2, 0, 1)
            return self.transform(pixels), sample.label
        try:
            image = open_rgb(sample.path, min_side=self.min_side)
        except (ImageDecodeError, FileNotFoundError) as err:
            # Every file was decoded at setup: reaching this means it changed during the run.
            raise RuntimeError(f"{err}. The file changed after the dataset was scanned; restore it.") from err
        return self.transform(image), sample.label
