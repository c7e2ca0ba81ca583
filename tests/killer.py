"""A callback that kills its own process with SIGKILL mid-epoch: what a pre-empted cluster job or an OOM killer
does. Used by test_reproducibility through `+callbacks.killer._target_=tests.killer.KillAt`."""

from __future__ import annotations

import os
import signal

from lightning.pytorch import Callback


class KillAt(Callback):
    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
