"""How unlike the training images an image is, from the detector's own features, in the same forward pass.

Per feature block read (each stage's output, mean-pooled, and the pooled features the classifier sees), the squared
Mahalanobis distance to the nearer class mean under one shared covariance (Lee et al., NeurIPS 2018), estimated
on the training split with Ledoit-Wolf shrinkage (a few hundred images for up to 2048 dimensions). Each block's
log distance is standardised on the training split and the blocks are averaged. By default it reads one block,
the deepest stage's output: measured on real sources (bench/bench_familiarity.py), it tells other sources apart
better than the classifier's own features (which fine-tuning has taught to ignore what differs between sources),
than the early stages, and than all blocks averaged.

These statistics are the detector's: fitted once, on the training split. What makes a distance "too far" is
calibration (metrics/calibration.py): an image's `familiarity` is the share of the calibration images at least as
far from the training images as it is (1 for a typical image, 0 beyond every one of them; a conformal p-value of
novelty), and it is `unfamiliar` below 1 - familiar_quantile. The reference distances come with the calibration
record, so recalibrating on a user's own images makes those images familiar and keeps flagging what is unlike them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.covariance import ledoit_wolf
from torch import nn

from trustthepixels.config import check_value
from trustthepixels.metrics.settings import AbstainSettings


def pool(feature: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) maps or (N, L, C) tokens to (N, C) means; (N, C) as it is."""
    if feature.dim() == 4:
        return feature.float().mean(dim=(2, 3))
    if feature.dim() == 3:
        return feature.float().mean(dim=1)
    return feature.float()


class Familiarity(nn.Module):
    """Pooled feature blocks (what `DetectorModule.forward_with_features` returns) to each image's distance from
    the training images and, given the calibration's reference distances, its familiarity.

    Its tensors are buffers, so it travels to the device with the model and exports to ONNX in the same graph.
    """

    def __init__(self, state: dict[str, Any], reference: Sequence[float] | None = None):
        super().__init__()
        self.layers = str(state["layers"])
        self.blocks = [int(b) for b in state["blocks"]]  # which of the model's blocks, in its order
        self.n_train = int(state["n_train"])
        for i, block in enumerate(state["stats"]):
            self.register_buffer(f"means{i}", torch.as_tensor(block["means"], dtype=torch.float32))
            self.register_buffer(f"whiten{i}", torch.as_tensor(block["whiten"], dtype=torch.float32))
        self.register_buffer("loc", torch.tensor([b["loc"] for b in state["stats"]], dtype=torch.float32))
        self.register_buffer("scale", torch.tensor([b["scale"] for b in state["stats"]], dtype=torch.float32))
        # The calibration images' distances, sorted (metrics/calibration.py): empty until a calibration sets them.
        self.register_buffer("reference", torch.zeros(0))
        if reference is not None:
            self.set_reference(reference)
        self._state = state

    def state(self) -> dict[str, Any]:
        return self._state

    def set_reference(self, distances: Sequence[float]) -> None:
        self.reference = torch.as_tensor(np.sort(np.asarray(distances, dtype=np.float32)), device=self.loc.device)

    def distance(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """(N,) standardised log Mahalanobis distance, averaged over the blocks: higher is further away."""
        scores = []
        for i, b in enumerate(self.blocks):
            x = blocks[b].float()
            means, whiten = getattr(self, f"means{i}"), getattr(self, f"whiten{i}")
            # (N, classes, C) whitened offsets from each class mean; the nearer class counts.
            offsets = (x[:, None, :] - means[None]) @ whiten
            squared = (offsets * offsets).sum(-1).amin(dim=1)
            scores.append((torch.log(squared + 1e-12) - self.loc[i]) / self.scale[i])
        return torch.stack(scores, dim=1).mean(dim=1)

    def rank(self, distance: torch.Tensor) -> torch.Tensor:
        """(N,) familiarity of these distances: the share of the reference (calibration) distances at least as large."""
        return (self.reference[None, :] >= distance[:, None]).float().mean(dim=1)

    def forward(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """(N,) familiarity: the share of calibration images at least as far away."""
        return self.rank(self.distance(blocks))


def _block_stats(train: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class means and the whitening matrix W of their shared, shrunk covariance (x W has identity covariance)."""
    train = train.astype(np.float64)
    means = np.stack([train[labels == c].mean(axis=0) for c in (0, 1)])
    centred = train - means[labels]
    covariance, _ = ledoit_wolf(centred, assume_centered=True)
    eigenvalues, vectors = np.linalg.eigh(covariance)
    whiten = vectors / np.sqrt(np.maximum(eigenvalues, eigenvalues.max() * 1e-9))
    return means, whiten


def _squared_distance(x: np.ndarray, means: np.ndarray, whiten: np.ndarray) -> np.ndarray:
    offsets = (x.astype(np.float64)[:, None, :] - means[None]) @ whiten
    return (offsets**2).sum(-1).min(axis=1)


def fit_familiarity(
    train_blocks: Sequence[np.ndarray],
    train_labels: np.ndarray,
    layers: str = "last_stage",
    blocks: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The familiarity's statistics, fitted on the training split's pooled features alone. Plain tensors and
    numbers, for a checkpoint (`torch.load(weights_only=True)`)."""
    check_value(AbstainSettings, "familiarity_layers", layers, "abstain.")
    labels = np.asarray(train_labels).astype(int)
    if len(set(labels.tolist())) < 2:
        raise ValueError("the training split needs images of both classes to fit the familiarity score")
    chosen = list(blocks) if blocks is not None else familiarity_blocks(len(train_blocks), layers)
    stats = []
    for b in chosen:
        means, whiten = _block_stats(train_blocks[b], labels)
        train_log = np.log(_squared_distance(train_blocks[b], means, whiten) + 1e-12)
        loc, scale = float(np.median(train_log)), float(train_log.std() or 1.0)
        tensors = {"means": torch.from_numpy(means).float(), "whiten": torch.from_numpy(whiten).float()}
        stats.append(tensors | {"loc": loc, "scale": scale})
    return {"layers": layers, "blocks": chosen, "n_train": len(labels), "stats": stats}


def familiarity_blocks(n: int, layers: str = "last_stage") -> list[int]:
    """Which of a model's `n` pooled feature blocks (its stages, then the classifier's features; the latter alone
    for a model without stages) `abstain.familiarity_layers` reads. Any other choice: `fit_familiarity(blocks=)`
    (bench/bench_familiarity.py)."""
    return {"all": list(range(n)), "classifier": [n - 1], "last_stage": [max(0, n - 2)]}[layers]
