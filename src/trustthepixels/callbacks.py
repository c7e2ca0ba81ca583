"""Training-loop callbacks that never make the CPU wait for the GPU at every step.

`EpochSummary`: a one-line summary per epoch in the log (timm's train.py habit), with the training rate and the
data-wait share, timed with CUDA events. `ProgressBar`: Rich's bar, redrawn at most twice a second. Lightning's own
`ThroughputMonitor` synchronises the GPU after every step and its `RichProgressBar` copies the loss to the CPU after
every step; either stops the CPU from queueing the next step while the GPU finishes one, so neither is used.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

log = logging.getLogger(__name__)

SUMMARY_METRICS = ("train/loss_epoch", "val/loss", "val/auroc", "val/acc", "val/ap")


class _Timeline:
    """Moments of the training loop: wall-clock on the CPU; on a GPU, CUDA events recorded on the stream and read
    after one synchronisation at the epoch's end, so that no step waits for the GPU just to be measured (a gap
    between one step's end event and the next step's start event is time the GPU sat idle)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) / 1000 if self.cuda else end - start


class EpochSummary(Callback):
    """Logs `train/images_per_sec` and `train/data_wait_share` (the share of step time spent waiting for the
    next batch) once per epoch, and prints one line per epoch.

    The rate is from the epoch's start to its last training batch, data loading included (what a user waits
    for) and validation excluded (Lightning runs it before `on_train_epoch_end`). The wait for an epoch's first
    batch is shown apart ("first batch"), and left out of the share. On a GPU all are read from CUDA events
    (`_Timeline`): a wait is time the GPU sat idle between two steps.
    """

    def __init__(self) -> None:
        self._timeline: _Timeline | None = None
        self._epoch_start: Any = None
        self._starts: list[Any] = []
        self._ends: list[Any] = []
        self._epoch_images = 0
        self.last_rate = 0.0  # images/s, data-wait share and first-batch wait of the latest epoch (bench/ reads them)
        self.last_wait_share = 0.0
        self.last_first_wait = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._timeline = _Timeline(pl_module.device)
        self._epoch_start = self._timeline.mark()
        self._starts, self._ends = [], []
        self._epoch_images = 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._starts.append(self._timeline.mark())

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._ends.append(self._timeline.mark())
        self._epoch_images += len(batch[1]) * trainer.world_size  # (images, labels, indices)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        timeline = self._timeline
        if timeline.cuda:
            torch.cuda.synchronize(pl_module.device)  # once per epoch: every event has been reached
        seconds = timeline.seconds(self._epoch_start, self._ends[-1]) if self._ends else 0.0
        rate = self._epoch_images / max(seconds, 1e-9)
        pl_module.log("train/images_per_sec", rate, on_step=False, on_epoch=True, rank_zero_only=True)
        waited = sum(timeline.seconds(end, start) for end, start in zip(self._ends, self._starts[1:], strict=False))
        stepped = timeline.seconds(self._ends[0], self._ends[-1]) if len(self._ends) > 1 else 0.0
        wait_share = waited / stepped if stepped else 0.0
        first_wait = timeline.seconds(self._epoch_start, self._starts[0]) if self._starts else 0.0
        self.last_rate, self.last_wait_share, self.last_first_wait = rate, wait_share, first_wait
        pl_module.log("train/data_wait_share", wait_share, on_step=False, on_epoch=True, rank_zero_only=True)
        if trainer.is_global_zero:
            metrics = trainer.callback_metrics
            shown = [f"{k.removesuffix('_epoch')} {metrics[k].item():.4f}" for k in SUMMARY_METRICS if k in metrics]
            log.info(
                "Epoch %d/%d | %s | %.1f img/s | data wait %.1f%% | first batch %.2f s | %.0f s",
                trainer.current_epoch + 1,
                trainer.max_epochs,
                " | ".join(shown),
                rate,
                100 * wait_share,
                first_wait,
                seconds,
            )


class StepSeed(Callback):
    """Seeds torch, numpy and Python's `random` before every training step from (seed, epoch, step, rank).

    What the main process draws in a step (dropout masks, drop-path, the flips done on the device) then depends
    on the step alone, not on what the process did before (a DataLoader iterator created, a sanity check run):
    a run resumed from `last.ckpt` repeats the uninterrupted run exactly. (Batches are made reproducible by
    `EpochSampler`, which seeds each image's augmentation in the workers.)"""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        key = f"{self.seed}/{trainer.current_epoch}/{batch_idx}/{trainer.global_rank}".encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:4], "little")
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # every device's generator


class ProgressBar(RichProgressBar):
    """Rich's progress bar, redrawn at most every `min_interval` seconds of training.

    Lightning's redraws it after every training step, and each redraw copies the logged loss to the CPU, which
    waits for the GPU to finish the step; the next step cannot be queued meanwhile. Redrawn twice a second, the
    GPU waits at most once per half second.
    """

    def __init__(self, min_interval: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_interval = min_interval
        self._drawn_at = float("-inf")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        if now - self._drawn_at >= self.min_interval or batch_idx + 1 == self.total_train_batches:
            self._drawn_at = now
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _get_train_description(self, current_epoch: int) -> str:
        """`Epoch 2/2` for the second of two, as the epoch summary and checkpoint names count (Lightning's says 1/1)."""
        total = f"/{self.trainer.max_epochs}" if self.trainer.max_epochs not in (None, -1) else ""
        return f"Epoch {current_epoch + 1}{total}".ljust(len(self.validation_description))


class Checkpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, naming epochs as the log does: `epoch002-...` is the second epoch, the one the
    summary line calls `Epoch 2/N` (Lightning counts from 0 in file names only)."""

    def _monitor_candidates(self, trainer: Trainer) -> dict[str, torch.Tensor]:
        candidates = super()._monitor_candidates(trainer)
        candidates["epoch"] = candidates["epoch"] + 1
        return candidates
