"""End-to-end training: in process, through train.py, on real data, as a sweep, and resumed."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trustthepixels.training import train

from .conftest import REPO, TINY


def run_train_py(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python train.py ...` in a subprocess, as a user types it, with the shared data dir passed along."""
    env = {**os.environ, "TTP_SHARED_DIR": str(REPO.parent / "shared"), "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def scalar_tags(run_dir: Path) -> set[str]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return set(events.Tags()["scalars"])


def session_hparams(run_dir: Path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    return plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams


def test_fast_dev_run_in_process(make_cfg, image_folder, tmp_path):
    cfg = make_cfg("debug=fdr", f"data.root={image_folder}", *TINY)
    metrics = train(cfg)
    assert {"val/auroc", "val/acc", "val/ap", "val/f1", "test/auroc", "test/acc", "test/loss"} <= set(metrics)
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["test"]["test/acc"] == pytest.approx(metrics["test/acc"])
    assert report["best_checkpoint"] is None  # fast_dev_run keeps no checkpoint
    assert report["data"]["images"] == {"train": 20, "val": 2, "calibration": 0, "test": 2}


def test_train_py_fast_dev_run(image_folder, tmp_path):
    run_train_py("debug=fdr", f"data.root={image_folder}", *TINY, f"paths.log_dir={tmp_path / 'outputs'}", cwd=tmp_path)
    (run_dir,) = (tmp_path / "outputs" / "debug" / "runs").iterdir()
    assert (run_dir / "metrics.json").is_file() and (run_dir / "split.csv").is_file()
    assert (run_dir / "train.log").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()


def test_training_without_a_logger(make_cfg, image_folder, tmp_path):
    train(make_cfg("debug=limit", f"data.root={image_folder}", *TINY, "trainer.max_epochs=1", "logger=none"))
    assert (tmp_path / "run" / "metrics.json").is_file() and not list((tmp_path / "run").glob("events.*"))


def test_training_survives_bad_inputs(make_cfg, bad_image_folder, tmp_path):
    cfg = make_cfg("debug=limit", f"data.root={bad_image_folder}", *TINY, "trainer.max_epochs=1")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["data"]["skipped_files"] == 7
    assert len((tmp_path / "run" / "skipped.csv").read_text().splitlines()) == 1 + 7


def test_short_real_run(shared_dir, tmp_path):
    """EfficientNet-Lite0 with the shared ImageNet weights on the real Kaggle AiArtData/RealArt images."""
    run_train_py(
        "experiment=real_vs_ai_lite0",
        "debug=limit",
        "data.image_size=64",
        "trainer.max_epochs=2",
        "logger=tensorboard",
        f"paths.log_dir={tmp_path / 'outputs'}",
        cwd=tmp_path,
    )
    (run_dir,) = (tmp_path / "outputs" / "debug" / "runs").iterdir()
    checkpoints = {p.name for p in (run_dir / "checkpoints").iterdir()}
    assert "last.ckpt" in checkpoints and any(name.startswith("epoch") for name in checkpoints)
    report = json.loads((run_dir / "metrics.json").read_text())
    assert Path(report["best_checkpoint"]).is_file()
    # Epochs counted from 1, as the log's "Epoch 2/2": the file of the second epoch is epoch002 (Lightning: epoch001).
    best_epoch = torch.load(report["best_checkpoint"], map_location="cpu", weights_only=True)["epoch"]
    assert Path(report["best_checkpoint"]).name.startswith(f"epoch{best_epoch + 1:03d}-")
    # The calibration part is half of what validation was: train and test are the images they were before it.
    assert report["data"]["images"] == {"train": 634, "val": 40, "calibration": 40, "test": 80}
    assert set(report["val"]) >= {"val/auroc", "val/acc"} and set(report["test"]) >= {"test/auroc", "test/acc"}
    assert len((run_dir / "split.csv").read_text().splitlines()) == 1 + 794
    tags = scalar_tags(run_dir)
    expected = {
        "train/loss_step",
        "train/loss_epoch",
        "train/images_per_sec",
        "val/auroc",
        "val/loss",
        "test/auroc",
        "lr/decay",
        "hparams/val/auroc",
        "hparams/test/acc",
    }
    assert expected <= tags, expected - tags
    # Intervals go to the TEXT tab's table, not to one-point scalar charts.
    assert not [t for t in tags if t.endswith(("_lo", "_hi"))]
    # HPARAMS shows its first 5 hparams (by name) at first: model, seed, lr, batch and precision; integers as such.
    hparams = session_hparams(run_dir)
    assert sorted(hparams)[:5] == ["batch_size", "lr", "model", "precision", "seed"]
    assert hparams["seed"].string_value == "42" and hparams["model"].string_value
    # The checkpoint is plain data: it loads without unpickling code, and carries labels and preprocessing.
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["ImageFolderDataModule"]["labels"] == {"0": "Real", "1": "AI"}
    assert checkpoint["ImageFolderDataModule"]["data_config"]["input_size"] == [3, 64, 64]


@pytest.mark.slow  # a two-job sweep in a subprocess (the fast suite keeps under 5 minutes)
def test_multirun_gives_one_directory_and_one_tensorboard_run_per_job(image_folder, tmp_path):
    run_train_py(
        "-m",
        "debug=limit",
        f"data.root={image_folder}",
        *TINY,
        "trainer.max_epochs=1",
        "model.optimizer.lr=1e-3,3e-4",
        f"paths.log_dir={tmp_path / 'outputs'}",
        cwd=tmp_path,
    )
    (sweep_dir,) = (tmp_path / "outputs" / "debug" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1"]
    lrs = set()
    for job in jobs:
        report = json.loads((job / "metrics.json").read_text())
        lrs.add(report["config"]["lr"])
        assert "val/auroc" in scalar_tags(job)
    assert lrs == {1e-3, 3e-4}
    with open(sweep_dir / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}
    assert float(rows[0]["val/auroc"]) >= float(rows[1]["val/auroc"])  # best first
    assert "model.optimizer.lr" in (sweep_dir / "summary.md").read_text()


@pytest.mark.slow  # subprocess runs end to end (the fast suite keeps under 5 minutes)
def test_resume_continues_the_run_at_the_next_epoch(image_folder, tmp_path):
    args = ["debug=limit", f"data.root={image_folder}", *TINY, f"paths.log_dir={tmp_path / 'outputs'}"]
    run_train_py(*args, "trainer.max_epochs=1", cwd=tmp_path)
    (run_dir,) = (tmp_path / "outputs" / "debug" / "runs").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0

    run_train_py(*args, "trainer.max_epochs=2", f"ckpt_path={last}", cwd=tmp_path)
    assert list((tmp_path / "outputs" / "debug" / "runs").iterdir()) == [run_dir]  # the same run, continued
    report = json.loads((run_dir / "metrics.json").read_text())
    steps_per_epoch = 5  # debug=limit: limit_train_batches=5
    assert report["epochs_completed"] == 2
    assert report["global_step"] == 2 * steps_per_epoch  # one epoch before, one after: not two new ones
    assert torch.load(last, weights_only=True)["global_step"] == 2 * steps_per_epoch
    events = EventAccumulator(str(run_dir))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss_epoch")]
    assert len(steps) == 2 and steps[0] < steps[1]  # one curve across both processes


@pytest.mark.slow
def test_compiled_backbone_trains_and_keeps_checkpoint_keys(make_cfg, image_folder, tmp_path):
    cfg = make_cfg("debug=limit", f"data.root={image_folder}", *TINY, "trainer.max_epochs=1", "model.compile=true")
    train(cfg)
    (checkpoint,) = (tmp_path / "run" / "checkpoints").glob("epoch*.ckpt")
    keys = torch.load(checkpoint, weights_only=True)["state_dict"].keys()
    assert "backbone.conv1.weight" in keys and not any("_orig_mod" in k for k in keys)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml")))
def test_every_experiment_composes_with_settings_that_can_work(experiment, tmp_path):
    """A recipe with a typo'd key or an impossible value fails here, not minutes into someone's run."""
    from trustthepixels.config import check_settings

    from .conftest import compose_cfg

    cfg = compose_cfg([f"experiment={experiment}"], tmp_path)
    check_settings(cfg)
    assert cfg.model.backbone and cfg.trainer.max_epochs >= 1


def test_the_progress_bar_reads_the_loss_back_at_most_twice_a_second(monkeypatch):
    """Each redraw of Lightning's Rich bar copies the logged loss to the CPU, which waits for the GPU to finish the
    step; the default bar (callbacks.ProgressBar) redraws after an epoch's first and last batches and otherwise only
    once min_interval has passed (the clock is simulated: 20 steps in 0.1 s, then one after 0.6 s)."""
    from lightning.pytorch.callbacks import RichProgressBar

    from trustthepixels.callbacks import ProgressBar

    drawn = []
    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", lambda self, *args: drawn.append(args[-1]))
    monkeypatch.setattr(ProgressBar, "total_train_batches", 22)
    clock = iter([i * 0.005 for i in range(20)] + [0.7, 0.705])
    monkeypatch.setattr("trustthepixels.callbacks.time.monotonic", lambda: next(clock))
    bar = ProgressBar(min_interval=0.5)
    for step in range(22):
        bar.on_train_batch_end(None, None, None, None, step)
    assert drawn == [0, 20, 21]  # the first, the first after 0.5 s, and the epoch's last
    from omegaconf import OmegaConf

    defaults = OmegaConf.load(REPO / "configs" / "callbacks" / "default.yaml")
    targets = [entry["_target_"] for entry in defaults.values() if entry]
    assert "trustthepixels.callbacks.ProgressBar" in targets
    assert not any(t.endswith("ThroughputMonitor") for t in targets)  # it synchronises the GPU after every step
