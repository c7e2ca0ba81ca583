"""A run killed with SIGKILL in the middle of an epoch and resumed from last.ckpt ends exactly where the
uninterrupted run ends, with two persistent DataLoader workers and random augmentation on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from .conftest import REPO, TINY, write_image_folder

pytestmark = pytest.mark.slow


def _train(*args: str, cwd, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def test_resume_after_sigkill_mid_epoch_reproduces_the_uninterrupted_run(tmp_path):
    folder = write_image_folder(tmp_path / "data", per_class=30, size=48)
    common = [
        "debug=limit",
        f"data.root={folder}",
        *TINY,
        "data.num_workers=2",  # persistent workers, each with its own RNG: the hard case
        "data.augment=robust",
        "trainer.max_epochs=3",
        "optimized_metric=val/loss",  # the best epoch moves: the test numbers depend on every epoch
        "logger=none",
    ]
    _train(*common, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path)

    killed = _train(
        *common,
        f"hydra.run.dir={tmp_path / 'killed'}",
        "+callbacks.killer._target_=tests.killer.KillAt",
        "+callbacks.killer.epoch=1",
        "+callbacks.killer.batch=2",
        cwd=tmp_path,
        check=False,
    )
    assert killed.returncode == -9  # SIGKILL, in the middle of the second epoch
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    _train(*common, f"ckpt_path={last}", cwd=tmp_path)  # continues in tmp_path / "killed"

    whole, resumed = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "killed"))
    assert resumed["global_step"] == whole["global_step"] == 15
    assert resumed["val"] == whole["val"] and resumed["test"] == whole["test"]  # exactly
    final = [
        torch.load(tmp_path / d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for d in ("whole", "killed")
    ]
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])
