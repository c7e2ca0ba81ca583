"""Training speed in TensorBoard and a one-line summary per epoch in the log (timm's train.py habit)."""

from __future__ import annotations

import logging
import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)

SUMMARY_METRICS = ("train/loss_epoch", "val/loss", "val/auroc", "val/acc", "val/ap")


class EpochSummary(Callback):
    """Logs `train/images_per_sec` (every `log_every_n_steps` and per epoch) and `train/data_wait_share`, the
    share of step time spent waiting for the next batch, and prints one line per epoch.

    Rates are wall-clock over the training batches, data loading included: what a user waits for. The wait
    of an epoch's first batch (workers starting) is left out of the share.
    """

    def __init__(self) -> None:
        self._epoch_start = self._window_start = 0.0
        self._epoch_images = self._window_images = 0
        self._last_end: float | None = None
        self._waited = self._stepped = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_start = self._window_start = time.perf_counter()
        self._epoch_images = self._window_images = 0
        self._last_end = None
        self._waited = self._stepped = 0.0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self._last_end is not None:
            self._waited += time.perf_counter() - self._last_end

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            self._stepped += now - self._last_end
        self._last_end = now
        n = len(batch[1]) * trainer.world_size
        self._epoch_images += n
        self._window_images += n
        if trainer.global_step % trainer.log_every_n_steps == 0:
            rate = self._window_images / max(now - self._window_start, 1e-9)
            pl_module.log("train/images_per_sec_step", rate, on_step=True, on_epoch=False, rank_zero_only=True)
            self._window_start, self._window_images = now, 0

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        seconds = time.perf_counter() - self._epoch_start
        rate = self._epoch_images / max(seconds, 1e-9)
        pl_module.log("train/images_per_sec", rate, on_step=False, on_epoch=True, rank_zero_only=True)
        wait_share = self._waited / self._stepped if self._stepped else 0.0
        pl_module.log("train/data_wait_share", wait_share, on_step=False, on_epoch=True, rank_zero_only=True)
        if trainer.is_global_zero:
            metrics = trainer.callback_metrics
            shown = [f"{k.removesuffix('_epoch')} {metrics[k].item():.4f}" for k in SUMMARY_METRICS if k in metrics]
            log.info(
                "Epoch %d/%d | %s | %.1f img/s | data wait %.1f%% | %.0f s",
                trainer.current_epoch + 1,
                trainer.max_epochs,
                " | ".join(shown),
                rate,
                100 * wait_share,
                seconds,
            )
