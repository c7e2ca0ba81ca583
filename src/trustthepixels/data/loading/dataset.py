"""Datasets over scanned image files (or cached features), and the sampler that makes every batch reproducible.

Each item is addressed by `(index, seed)`: `EpochSampler` draws the order and one seed per image from
(run seed, epoch) alone, and the dataset draws the image's random augmentation from that seed. A batch therefore
does not depend on the number of workers, on whether they are persistent, nor on what ran before: a run resumed
from `last.ckpt` sees exactly the batches the uninterrupted run saw.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trustthepixels.data.ingest.decode import ImageDecodeError
from trustthepixels.data.ingest.scan import Sample
from trustthepixels.data.loading.pixel_cache import PixelCache
from trustthepixels.data.loading.transforms import Preprocessing, load_pixels

Item = tuple[torch.Tensor, int, int]  # (image or features, label, index in the dataset)


def _split_item(item: int | tuple[int, int]) -> tuple[int, int | None]:
    return (item, None) if isinstance(item, int) else (int(item[0]), int(item[1]))


class ImageFileDataset(Dataset):
    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable,
        pre: Preprocessing,
        min_side: int = 1,
        cache: PixelCache | None = None,
        sha256: Sequence[str] | None = None,
    ):
        self.samples = list(samples)
        self.transform = transform
        self.pre = pre
        self.min_side = min_side
        self.cache = cache
        self.sha256 = list(sha256) if sha256 is not None else None

    def __len__(self) -> int:
        return len(self.samples)

    def base_image(self, index: int) -> torch.Tensor:
        """The image as `load_pixels` defines it (uint8 CHW), from the cache when there is one."""
        if self.cache is not None:  # HWC uint8 from the memory map, as a CHW tensor
            return torch.from_numpy(self.cache.get(self.sha256[index]).copy()).permute(2, 0, 1)
        sample = self.samples[index]
        try:
            return load_pixels(sample.path, self.pre, self.min_side)
        except (ImageDecodeError, FileNotFoundError) as err:
            # Every file was decoded at setup: reaching this means it changed during the run.
            raise RuntimeError(f"{err}. The file changed after the dataset was scanned; restore it.") from err

    def __getitem__(self, item: int | tuple[int, int]) -> Item:
        index, seed = _split_item(item)
        pixels = self.base_image(index)
        if seed is None:
            return self.transform(pixels), self.samples[index].label, index
        # The image's own random stream; the process's RNG (the worker's, or the main process's when
        # num_workers=0) is put back afterwards. Only the CPU generator: transforms run on the CPU, and seeding
        # every device's generator (torch.manual_seed) costs more than the crop itself.
        torch_state, python_state = torch.get_rng_state(), random.getstate()
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        try:
            return self.transform(pixels), self.samples[index].label, index
        finally:
            torch.set_rng_state(torch_state)
            random.setstate(python_state)


class FeatureDataset(Dataset):
    """A frozen backbone's cached features: nothing random left to draw."""

    def __init__(self, features: torch.Tensor, labels: Sequence[int], samples: Sequence[Sample]):
        self.features, self.labels, self.samples = features, list(labels), list(samples)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: int | tuple[int, int]) -> Item:
        index, _ = _split_item(item)
        return self.features[index], self.labels[index], index


class EpochSampler(Sampler):
    """Yields `(index, seed)`: the order (shuffled or not) and each image's augmentation seed are functions of
    (seed, epoch) only.

    The epoch is read from `epoch_of()` (the trainer's current epoch) when iteration starts. Lightning's
    `set_epoch` call is not enough: a resumed run creates its first iterator before calling it, and worker
    processes start prefetching at once, so the first epoch after a resume would replay epoch 0's order.

    With several processes (DDP) each rank takes every `num_replicas`-th position. Training pads the order
    by wrapping around, so every rank runs the same number of steps; evaluation never pads, so every image
    is scored exactly once and the ranks' predictions are gathered (see `DetectorModule`).

    `pairs` (data.pair_augment): the two images of a pair come side by side at positions 2k and 2k+1 with one
    seed, so that they get the same random crop, blur and JPEG (and, on the device, flip) in the same batch; the
    other images are packed two by two in the same way, and ranks take whole slots of two."""

    def __init__(
        self,
        size: int,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        num_replicas: int = 1,
        pad: bool = False,
        epoch_of: Callable[[], int] | None = None,
        pairs: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.pairs = list(pairs)
        self.rank, self.num_replicas, self.pad = rank, num_replicas, pad
        self.epoch_of = epoch_of
        self.epoch = 0
        self.ahead = 0  # epochs past epoch_of(): EpochAheadLoader draws the next epoch's order before it starts

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _slots(self, generator: torch.Generator) -> list[list[int]]:
        """The images in units (a pair, or one image) in a seeded order, packed into slots of two."""
        partner = {a: b for a, b in self.pairs}
        paired = set(partner) | set(partner.values())
        units = [[a, b] for a, b in self.pairs] + [[i] for i in range(self.size) if i not in paired]
        order = torch.randperm(len(units), generator=generator).tolist() if self.shuffle else range(len(units))
        slots, single = [], None
        for unit in (units[k] for k in order):
            if len(unit) == 2:
                slots.append(unit)
            elif single is None:
                single = unit[0]
            else:
                slots.append([single, unit[0]])
                single = None
        if single is not None:
            slots.append([single] if self.num_replicas == 1 else [single, single])  # ranks take whole slots of two
        return slots

    def _slot_count(self) -> int:
        singles = self.size - 2 * len(self.pairs)
        count = len(self.pairs) + (singles + 1) // 2
        return count + (-count % self.num_replicas if self.pad else 0)

    def _positions(self) -> list[int]:
        positions = list(range(self.size))
        if self.pad and self.num_replicas > 1 and self.size % self.num_replicas:
            extra = self.num_replicas - self.size % self.num_replicas
            positions += positions[:extra]
        return positions[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        if self.pairs:
            if self.num_replicas == 1:
                return self.size
            return 2 * len(range(self.rank, self._slot_count(), self.num_replicas))
        return len(self._positions())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = (self.epoch_of() if self.epoch_of is not None else self.epoch) + self.ahead
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator).tolist()
        if self.pairs:
            yield from self._paired(generator, seeds)
            return
        order = torch.randperm(self.size, generator=generator).tolist() if self.shuffle else range(self.size)
        order = list(order)
        for position in self._positions():
            index = order[position % self.size]
            yield index, seeds[index]

    def _paired(self, generator: torch.Generator, seeds: list[int]) -> Iterator[tuple[int, int]]:
        slots = self._slots(generator)
        if self.num_replicas > 1:  # whole slots per rank, padded by wrapping around
            slots = [slots[k % len(slots)] for k in range(self._slot_count())][self.rank :: self.num_replicas]
        seed_of = {ai: real for real, ai in self.pairs}  # a pair draws with its photo's seed; other images their own
        for slot in slots:
            for index in slot:
                yield index, seeds[seed_of.get(index, index)]


class EpochAheadLoader(DataLoader):
    """A training DataLoader whose persistent workers start on the next epoch as soon as this epoch's last batch
    has been handed out.

    Lightning validates between two epochs, and the workers build the next epoch's first batches meanwhile. A
    plain DataLoader starts them only when the next epoch asks for its first batch: each epoch then began with
    the GPU idle while one worker built a whole batch (measured in docs/speed.md, GPU). The batches are the
    same either way: their order and augmentation draws depend on (seed, epoch) only.
    """

    _next: Iterator | None = None

    def __iter__(self) -> Iterator:
        iterator = self._next if self._next is not None else super().__iter__()
        self._next = None
        # Lightning takes exactly len(self) batches and never asks past the last one: start the next epoch when
        # the last batch has arrived (the workers have nothing else to do) and before handing it out.
        last = len(self) if self.persistent_workers and isinstance(self.sampler, EpochSampler) else None
        for count, batch in enumerate(iterator, 1):
            if count == last:
                self._start_next_epoch()
                yield batch
                return  # the iterator object now serves the next epoch
            yield batch

    def _start_next_epoch(self) -> None:
        self.sampler.ahead = 1
        try:
            self._next = super().__iter__()  # resets the persistent workers' iterator: their prefetch begins
        finally:
            self.sampler.ahead = 0
