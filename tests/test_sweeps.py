"""Sweeps and scale-out, for real: a grid with a failing job, Optuna stopped and resumed, submitit's local
launcher, and DDP over two CPU processes. The slow part of the suite."""

from __future__ import annotations

import csv
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
