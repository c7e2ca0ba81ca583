"""Sweeps and scale-out, for real: a grid with a failing job, Optuna stopped and resumed, submitit's local
launcher, and DDP over two CPU processes. The slow part of the suite."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, TINY
from .test_train import run_train_py

pytestmark = pytest.mark.slow
FAST = ["debug=fdr", *TINY]


def summary(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def test_a_failed_job_is_a_row_and_the_sweep_goes_on(image_folder, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "-m",
            *FAST,
            f"data.root={image_folder}",
            "model.optimizer.lr=1e-3,-1,3e-4",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0  # Hydra reports the failure at the end...
    rows = {r["job"]: r for r in summary(tmp_path / "sweep")}
    assert [rows[j]["status"] for j in ("0", "1", "2")] == ["completed", "failed", "completed"]  # ...after job 2
    assert "Invalid learning rate" in rows["1"]["error"]


def test_optuna_search_resumes_after_being_stopped(image_folder, tmp_path):
    sweep_dir = tmp_path / "search"
    args = [
        sys.executable,
        str(REPO / "train.py"),
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
        *FAST,
        f"data.root={image_folder}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    first = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (sweep_dir / "0" / "metrics.json").exists():  # stop it once the first trial has finished
        assert first.poll() is None and time.monotonic() < deadline, "the first trial did not finish"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()

    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    import optuna

    study = optuna.load_study(study_name="trustthepixels", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)
    assert {r["status"] for r in summary(sweep_dir)} <= {"completed", "interrupted"}
    assert sum(r["status"] == "completed" for r in summary(sweep_dir)) == 3


def test_submitit_local_launcher(image_folder, tmp_path):
    run_train_py(
        "-m",
        "hydra/launcher=submitit_local",
        *FAST,
        f"data.root={image_folder}",
        "model.optimizer.lr=1e-3,3e-4",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    rows = summary(tmp_path / "sweep")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}


def test_ddp_on_two_cpu_processes_writes_one_run_directory(image_folder, tmp_path):
    result = run_train_py(
        "trainer=ddp_sim", *FAST, f"data.root={image_folder}", f"paths.log_dir={tmp_path / 'outputs'}", cwd=tmp_path
    )
    assert result.stderr.count("Initializing distributed") + result.stdout.count("Initializing distributed") == 2
    (run_dir,) = (tmp_path / "outputs" / "debug" / "runs").iterdir()
    assert (run_dir / "metrics.json").is_file() and (run_dir / "train_ddp_rank_1.log").is_file()
    assert not (tmp_path / ".hydra").exists() and not list(tmp_path.glob("*.log"))  # nothing in the launch dir


def test_ddp_inside_a_sweep_keeps_one_directory_per_job(image_folder, tmp_path):
    run_train_py(
        "-m",
        "trainer=ddp_sim",
        *FAST,
        f"data.root={image_folder}",
        "model.optimizer.lr=1e-3,3e-4",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == ["0", "1"]
    for job in jobs:
        assert (tmp_path / "sweep" / job / "train_ddp_rank_1.log").is_file()
    assert {r["status"] for r in summary(tmp_path / "sweep")} == {"completed"}


def test_ddp_counts_every_image_once_and_matches_single_process_eval(tmp_path):
    """7 test images on 2 ranks: a padded sampler would score one twice. The rank command keeps --config-dir
    and hydra.* overrides (an experiment only that folder has; a hydra.job override)."""
    from trustthepixels.evaluation.evaluate import evaluate
    from trustthepixels.metrics.core import core_metrics

    from .conftest import compose_cfg, write_image_folder

    folder = write_image_folder(tmp_path / "data", per_class=18)
    for path in sorted((folder / "AI").iterdir())[15:]:
        path.unlink()  # 15 AI + 18 Real: val and test get 3 + 4 = 7 images each
    extra = tmp_path / "my-configs"
    (extra / "experiment").mkdir(parents=True)
    (extra / "experiment" / "tiny_ddp.yaml").write_text(
        "# @package _global_\ndata:\n  split: [0.6, 0.2, 0.2]\ntrainer:\n  max_epochs: 2\n"
    )
    run_train_py(
        f"--config-dir={extra}",
        "experiment=tiny_ddp",
        "trainer=ddp_sim",
        "debug=limit",
        *TINY,
        f"data.root={folder}",
        "trainer.max_epochs=2",
        "+hydra.job.env_set.TTP_MARK=ddp",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["data"]["images"]["test"] == 7 and report["test"]["test/images"] == 7
    assert report["val"]["val/images"] == report["data"]["images"]["val"] == 3  # 4 of the 7 went to calibration
    assert (tmp_path / "run" / "train_ddp_rank_1.log").is_file()
    with open(tmp_path / "run" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len({r["path"] for r in rows}) == len(rows) == 7
    eval_cfg = compose_cfg(
        [f"ckpt_path={report['best_checkpoint']}", "robustness=false", "data.num_workers=0"],
        tmp_path / "eval",
        config_name="eval",
    )
    single = evaluate(eval_cfg)["sets"]["test"]
    for key in ("auroc", "ap", "acc", "balanced_acc", "f1", "loss", "ece", "images"):
        assert report["test"][f"test/{key}"] == pytest.approx(single[key], abs=1e-4), key
    labels = [int(r["label"]) for r in rows]
    logits = [float(r["logit"]) for r in rows]
    assert core_metrics(labels, logits)["auroc"] == pytest.approx(report["test"]["test/auroc"])


def test_a_trial_killed_after_its_run_finished_is_recovered_as_complete(tmp_path):
    """The value a resumed Optuna study records for a trial left RUNNING: its job's optimized metric when the job
    wrote metrics.json (killed before the sweeper told the study), else nothing (the trial is marked FAIL)."""
    from hydra_plugins.trustthepixels.resumable_optuna import finished_value

    job = tmp_path / "0"
    job.mkdir()
    assert finished_value(job) is None  # killed while training
    (job / "metrics.json").write_text('{"optimized_metric": "val/auroc", "val": {"val/au')
    assert finished_value(job) is None  # killed while writing it
    report = {"optimized_metric": "val/loss", "val": {"val/loss": 0.25, "val/auroc": 0.9}, "test": {"test/acc": 1}}
    (job / "metrics.json").write_text(json.dumps(report))
    assert finished_value(job) == 0.25
    (job / "metrics.json").write_text(json.dumps(report | {"val": {"val/loss": float("nan")}}))
    assert finished_value(job) is None  # a diverged run: no value to tell
