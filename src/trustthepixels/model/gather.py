"""What one evaluation pass over a split predicted (every process's share, gathered), and which of those images
come from which source: the validation and test metrics are computed from these, once per pass."""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import LightningModule
from torchmetrics.utilities.distributed import gather_all_tensors


def source_masks(sources: list[str] | None, indices: np.ndarray) -> dict[str, np.ndarray]:
    """For predictions of dataset `indices`: source name -> which of them come from it ({} for one source)."""
    if not sources:
        return {}
    of = np.asarray(sources)[np.asarray(indices, dtype=np.int64)]
    return {name: of == name for name in sorted(set(sources))}


class Predictions:
    """Every (index, logit, label) of one evaluation pass over a split, from this process."""

    def __init__(self) -> None:
        self.indices: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def add(self, indices: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.indices.append(indices.detach().long())
        self.logits.append(logits.detach().double())
        self.labels.append(labels.detach().long())

    def gathered(self, module: LightningModule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indices, logits, labels) of the whole split, sorted by index, each image once: gathered from every
        process (torchmetrics' gather, which takes shares of different sizes), with any repeated image dropped."""
        device = module.device
        local = torch.stack(
            [
                torch.cat(x).to(device).double() if x else torch.zeros(0, device=device, dtype=torch.float64)
                for x in (self.indices, self.logits, self.labels)
            ]
        )
        if module.trainer is not None and module.trainer.world_size > 1:
            local = torch.cat(gather_all_tensors(local), dim=1)
        indices, logits, labels = local.cpu().numpy()
        indices, first = np.unique(indices.astype(np.int64), return_index=True)
        return indices, logits[first], labels[first].astype(np.int64)
