"""Batched inference over image files: one logit (and familiarity) per image, in file order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from trustthepixels.data.ingest.decode import ImageDecodeError, ImageSource
from trustthepixels.data.loading.transforms import Preprocessing, build_transform, load_pixels
from trustthepixels.quiet import progress


class InferenceDataset(Dataset):
    """The model's input for each file, exactly as in training's evaluation: `load_pixels`, then `perturb`
    (the same for every image, whatever its label, on the base image), then the eval resize and crop.

    A file that cannot be used yields its error instead of raising, so one bad file never stops a batch.
    """

    def __init__(
        self,
        paths: Sequence[ImageSource],
        data_config: dict,
        min_side: int,
        perturb: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.paths = list(paths)
        self.pre = Preprocessing.from_data_config(data_config)
        self.transform = build_transform(data_config, train=False)
        self.perturb = perturb
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, ImageDecodeError | None]:
        try:
            pixels = load_pixels(self.paths[index], self.pre, self.min_side)
        except ImageDecodeError as err:
            return None, index, err
        except OSError as err:  # reading the file itself failed (the gate maps everything Pillow raises)
            return None, index, ImageDecodeError(self.paths[index], f"cannot be read ({err})", "unreadable")
        if self.perturb is not None:
            pixels = self.perturb(pixels)
        return self.transform(pixels), index, None


def _collate(items: list) -> tuple[torch.Tensor | None, list[int], list[tuple[int, ImageDecodeError]]]:
    good = [(tensor, index) for tensor, index, error in items if tensor is not None]
    failed = [(index, error) for tensor, index, error in items if tensor is None]
    images = torch.stack([t for t, _ in good]) if good else None
    return images, [i for _, i in good], failed


@dataclass
class Scores:
    """Per file, in file order: its logit and familiarity (NaN where it could not be used, or, for familiarity,
    where the detector has no familiarity score), and why each unusable file could not be used, by index."""

    logits: np.ndarray
    familiarity: np.ndarray
    errors: dict[int, ImageDecodeError]
    # How far from the training images (model/familiarity.py), NaN without a familiarity score: what a
    # calibration's familiarity reference is made of.
    distances: np.ndarray | None = None
    # The pooled feature blocks, when asked for (to fit familiarity): one per block, None for a block not kept.
    features: list[np.ndarray | None] | None = None


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    dataset: InferenceDataset,
    batch_size: int = 64,
    num_workers: int = 0,
    description: str | None = None,
    familiarity: torch.nn.Module | None = None,
    keep_blocks: Callable[[int], Sequence[int]] | None = None,
) -> Scores:
    """Logits for every decodable file, and with `familiarity` the familiarity score from the same forward pass;
    with `keep_blocks` (the number of feature blocks -> those to keep) the pooled features of those blocks only: a
    familiarity fit reads one block of a backbone's five, and keeping them all cost resnet50 5,952 floats an image
    for the 2,048 it used."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    device = next(model.parameters()).device
    if familiarity is not None:
        familiarity.to(device)
    scores = Scores(*(np.full(len(dataset), np.nan) for _ in range(2)), {}, np.full(len(dataset), np.nan))
    blocks: list[list[np.ndarray]] = []
    kept: list[int] = []
    batches = progress(loader, description) if description else loader
    for images, indices, failed in batches:
        scores.errors.update(failed)
        if images is None:
            continue
        images = images.to(device)
        if familiarity is None and keep_blocks is None:
            scores.logits[indices] = model(images).float().cpu().numpy()
            continue
        logits, features = model.forward_with_features(images)
        scores.logits[indices] = logits.float().cpu().numpy()
        if familiarity is not None:
            distance = familiarity.distance(features)
            scores.distances[indices] = distance.cpu().numpy()
            scores.familiarity[indices] = familiarity.rank(distance).cpu().numpy()
        if keep_blocks is not None:
            kept = kept or sorted(set(keep_blocks(len(features))))
            blocks.append([features[b].cpu().numpy() for b in kept])
    if keep_blocks is not None and blocks:
        n = len(features)
        joined = dict(zip(kept, (np.concatenate(parts) for parts in zip(*blocks, strict=True)), strict=True))
        scores.features = [joined.get(b) for b in range(n)]
    elif keep_blocks is not None:
        scores.features = []
    return scores
