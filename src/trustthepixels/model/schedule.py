"""Learning rate: scaled to the batch size, then a linear warmup and a cosine decay, stepped every optimizer step.

Kept by hand (one LambdaLR): timm.scheduler steps by epoch or by a `num_updates` call that Lightning would need
a custom `lr_scheduler_step` for, and torch's SequentialLR(LinearLR, CosineAnnealingLR) cannot end the cosine at
a ratio of the base LR per group.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.01
) -> LambdaLR:
    """Rise linearly for `warmup_fraction` of the run, then follow a cosine down to `min_lr_ratio` x lr."""
    warmup = max(1, round(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def scaled_lr(lr: float, batch: int, lr_batch: int, optimizer_target: str) -> float:
    """The learning rate for `batch` images per step, given `lr` set for `lr_batch`: timm's rule (train.py's
    --lr-base-scale), the square root of the ratio for adaptive optimizers (Adam, AdamW, Adagrad, LAMB), the
    ratio itself for the others (SGD: Goyal et al., 2017)."""
    name = optimizer_target.rsplit(".", 1)[-1].lower()
    ratio = batch / lr_batch
    return lr * (math.sqrt(ratio) if "ada" in name or "lamb" in name else ratio)
