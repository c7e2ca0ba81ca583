"""How unlike the training images an image is, from the detector's own features, in the same forward pass.

Per feature block read (each stage's output, mean-pooled, and the pooled features the classifier sees), the squared
Mahalanobis distance to the nearer class mean under one shared covariance (Lee et al., NeurIPS 2018), estimated
on the training split with Ledoit-Wolf shrinkage (a few hundred images for up to 2048 dimensions). Each block's
log distance is standardised on the validation split and the blocks are averaged. By default it reads one block,
the deepest stage's output: measured on real sources (bench/bench_familiarity.py), it tells other sources apart
better than the classifier's own features (which fine-tuning has taught to ignore what differs between sources),
than the early stages, and than all blocks averaged.

An image's `familiarity` is the share of validation images at least as far from the training images as it is:
1 for a typical image, 0 beyond every validation image. `unfamiliar` when it is below 1 - familiar_quantile, so
that share of the validation split (at most) is flagged, and no more, whatever the scale of the distances.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.covariance import ledoit_wolf
from torch import nn

from trustthepixels.config import check_value
from trustthepixels.metrics.settings import DEFAULT_QUANTILE, AbstainSettings


def pool(feature: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) maps or (N, L, C) tokens to (N, C) means; (N, C) as it is."""
    if feature.dim() == 4:
        return feature.float().mean(dim=(2, 3))
    if feature.dim() == 3:
        return feature.float().mean(dim=1)
    return feature.float()


class Familiarity(nn.Module):
    """Pooled feature blocks (what `DetectorModule.forward_with_features` returns) to each image's familiarity.

    Its tensors are buffers, so it travels to the device with the model and exports to ONNX in the same graph.
    """

    def __init__(self, state: dict[str, Any]):
        super().__init__()
        self.layers = str(state["layers"])
        self.blocks = [int(b) for b in state["blocks"]]  # which of the model's blocks, in its order
        self.quantile = float(state["quantile"])
        self.n_train, self.n_val = int(state["n_train"]), int(state["n_val"])
        for i, block in enumerate(state["stats"]):
            self.register_buffer(f"means{i}", torch.as_tensor(block["means"], dtype=torch.float32))
            self.register_buffer(f"whiten{i}", torch.as_tensor(block["whiten"], dtype=torch.float32))
        self.register_buffer("loc", torch.tensor([b["loc"] for b in state["stats"]], dtype=torch.float32))
        self.register_buffer("scale", torch.tensor([b["scale"] for b in state["stats"]], dtype=torch.float32))
        self.register_buffer("val_distances", torch.as_tensor(state["val_distances"], dtype=torch.float32))
        self._state = state

    def state(self) -> dict[str, Any]:
        return self._state

    @property
    def cutoff(self) -> float:
        """Familiarity below this is `unfamiliar`."""
        return 1.0 - self.quantile

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

    def forward(self, blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """(N,) familiarity: the share of validation images at least as far away."""
        distance = self.distance(blocks)
        return (self.val_distances[None, :] >= distance[:, None]).float().mean(dim=1)


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
    val_blocks: Sequence[np.ndarray],
    quantile: float = DEFAULT_QUANTILE,
    layers: str = "last_stage",
    blocks: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The familiarity's state: fitted on the training split's pooled features, standardised and cut on the
    validation split's. Plain tensors and numbers, for a checkpoint (`torch.load(weights_only=True)`)."""
    check_value(AbstainSettings, "familiar_quantile", quantile, "abstain.")
    check_value(AbstainSettings, "familiarity_layers", layers, "abstain.")
    labels = np.asarray(train_labels).astype(int)
    if len(set(labels.tolist())) < 2:
        raise ValueError("the training split needs images of both classes to fit the familiarity score")
    chosen = list(blocks) if blocks is not None else familiarity_blocks(len(train_blocks), layers)
    stats, val_scores = [], []
    for b in chosen:
        means, whiten = _block_stats(train_blocks[b], labels)
        val_log = np.log(_squared_distance(val_blocks[b], means, whiten) + 1e-12)
        loc, scale = float(np.median(val_log)), float(val_log.std() or 1.0)
        stats.append({"means": torch.from_numpy(means).float(), "whiten": torch.from_numpy(whiten).float(),
                      "loc": loc, "scale": scale})  # fmt: skip
        val_scores.append((val_log - loc) / scale)
    state = {
        "layers": layers,
        "blocks": chosen,
        "quantile": float(quantile),
        "n_train": len(labels),
        "n_val": len(val_blocks[chosen[0]]),
        "stats": stats,
        "val_distances": torch.zeros(0),
    }
    # The validation distances as the scorer computes them (float32), so that each validation image's
    # familiarity is exactly its rank among them.
    state["val_distances"] = Familiarity(state).distance(
        [torch.from_numpy(v).float() if v is not None else None for v in val_blocks]
    )
    return state


def familiarity_blocks(n: int, layers: str = "last_stage") -> list[int]:
    """Which of a model's `n` pooled feature blocks (its stages, then the classifier's features; the latter alone
    for a model without stages) `abstain.familiarity_layers` reads. Any other choice: `fit_familiarity(blocks=)`
    (bench/bench_familiarity.py)."""
    return {"all": list(range(n)), "classifier": [n - 1], "last_stage": [max(0, n - 2)]}[layers]
