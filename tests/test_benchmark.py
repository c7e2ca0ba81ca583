"""benchmark.py: one training per row, every checkpoint on every source, the matrix at the sweep's root."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trustthepixels.cli import check_command_line
from trustthepixels.generalization.matrix import summary_line
from trustthepixels.generalization.rows import benchmark_sources, rows

from .conftest import REPO, TINY, write_image_folder


def run_benchmark(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmark.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TTP_SHARED_DIR": str(REPO.parent / "shared")},
    )


def test_rows_single_sources_then_leave_one_out():
    sources = {"a": 1, "b": 2, "c": 3, "h": 4}
    assert rows(sources, ["h"], False) == ["a", "b", "c"]
    assert rows(sources, ["h"], True) == ["a", "b", "c", "all_but_a", "all_but_b", "all_but_c"]
    assert rows({"a": 1, "b": 2}, [], True) == ["a", "b"]  # all-but-one of two sources is a single source


@pytest.mark.slow
def test_benchmark_matrix_with_leave_one_out(tmp_path):
    data = {name: write_image_folder(tmp_path / name, per_class=40 if name == "h" else 12, size=40)
            for name in ("a", "b", "c", "h")}  # fmt: skip
    for folder in ("AI", "Real"):  # near-duplicates in h: a recalibration's halves must keep each pair together
        for original in sorted((data["h"] / folder).iterdir())[:8]:
            shutil.copy(original, original.with_name(f"copy_{original.name}"))
    sources = "{" + ", ".join(f"{k}: {v}" for k, v in data.items()) + "}"
    result = run_benchmark(
        f"sources={sources}", "test_only=[h]", "leave_one_out=true", "recalibrate=true", "debug=limit", *TINY,
        "trainer.max_epochs=1", f"paths.log_dir={tmp_path / 'outputs'}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    (sweep,) = (tmp_path / "outputs" / "benchmark" / "multiruns").iterdir()
    with open(sweep / "matrix.csv", newline="") as f:
        cells = list(csv.DictReader(f))
    assert [c["trained_on"] for c in cells[::4]] == ["a", "b", "c", "all_but_a", "all_but_b", "all_but_c"]
    by = {(c["trained_on"], c["tested_on"]): c for c in cells}
    # Every column is the same images whatever the row; a test-only source is scored on all of its images.
    for column in ("a", "b", "c", "h"):
        assert len({by[(row, column)]["images"] for row in ("a", "b", "all_but_a")}) == 1
    assert by[("a", "h")]["images"] == "96"
    assert by[("a", "a")]["in_source"] == "True" and by[("all_but_a", "a")]["in_source"] == "False"
    assert by[("all_but_a", "b")]["in_source"] == "True"
    # One code path per number: a cell is the number the row's own training reported for that source.
    jobs = {json.loads((d / "benchmark_row.json").read_text())["train_on"]: d for d in sweep.iterdir() if d.is_dir()
            and (d / "benchmark_row.json").is_file()}  # fmt: skip
    single = json.loads((jobs["a"] / "metrics.json").read_text())["test"]
    assert float(by[("a", "a")]["auroc"]) == pytest.approx(single["test/auroc"], abs=1e-9)
    union = json.loads((jobs["all_but_a"] / "metrics.json").read_text())["test"]
    assert float(by[("all_but_a", "c")]["auroc"]) == pytest.approx(union["test/auroc/c"], abs=1e-9)
    markdown = (sweep / "matrix.md").read_text()
    found = [json.loads((d / "benchmark_row.json").read_text()) for d in jobs.values()]
    assert summary_line(found) in markdown and "| all_but_c |" in markdown
    assert "nan" not in summary_line(found)  # a tiny run answers nothing: its accuracy on answered images is "-"
    assert (sweep / "matrix.png").read_bytes().startswith(b"\x89PNG")
    assert any((sweep / "tensorboard").iterdir())
    # recalibrate=true: every out-of-source cell recalibrated on half of it and checked on the rest (h: 24 + 24 per
    # class), or said to be too small for alpha (the other sources' test splits: a few images each).
    assert "## Recalibrated on each out-of-source cell" in markdown and "Pooled confident-error rate" in markdown
    row = json.loads((jobs["a"] / "benchmark_row.json").read_text())
    recalibrated = row["cells"]["h"]["recalibrated"]
    assert recalibrated["images"] == 48 and recalibrated["after"]["AI"]["images"] == 24
    assert "not recalibrated: 1 Real image of b and 1 AI image of b" in row["cells"]["b"]["recalibrated"]["note"]
    assert "recalibrated" not in row["cells"]["a"]
    # One code path per number: a cell's recalibration is calibrate.py's on that folder (the same halves, the record
    # fitted on one, both records checked on the other).
    calibrated = subprocess.run(
        [sys.executable, str(REPO / "calibrate.py"), f"ckpt_path={row['checkpoint']}", f"data.root={data['h']}",
         "data.num_workers=0", f"hydra.run.dir={tmp_path / 'calibrated'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert calibrated.returncode == 0, calibrated.stderr[-4000:]
    checks = json.loads((tmp_path / "calibrated" / "metrics.json").read_text())["checks"]
    assert {k: checks[k] for k in ("before", "after")} == {k: recalibrated[k] for k in ("before", "after")}
    # And the promise on each row's own test split: the share of images whose set holds their label, per class.
    assert "## The promise on each row's own test split" in markdown
    assert set(row["cells"]["a"]["promise"]) == {"AI", "Real"} and "promise" not in row["cells"]["h"]


def benchmark_refusal(monkeypatch, capsys, *arguments: str) -> str:
    """The one line benchmark.py prints before Hydra starts (its `check_command_line` with `benchmark_sources`)."""
    monkeypatch.setattr(sys, "argv", ["benchmark.py", *arguments])
    with pytest.raises(SystemExit):
        check_command_line(REPO / "configs", "benchmark", check=benchmark_sources)
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) <= 6, err
    (message,) = [line for line in err.splitlines() if line.startswith("Error:")]
    return message


def test_benchmark_refuses_bad_sources_in_one_line(tmp_path, monkeypatch, capsys):
    message = benchmark_refusal(monkeypatch, capsys, f"sources={{a: {tmp_path}, b: {tmp_path / 'nope'}}}")
    assert message.startswith("Error: sources: b=")


@pytest.mark.slow
def test_under_ddp_only_rank_0_scores_and_writes_the_row(tmp_path):
    """Every rank trains; rank 0 alone reads the report (written by rank 0 only), scores and writes the row."""
    data = {name: write_image_folder(tmp_path / name, per_class=12, size=40) for name in ("a", "h")}
    result = run_benchmark(
        f"sources={{a: {data['a']}, h: {data['h']}}}", "test_only=[h]", "trainer=ddp_sim", "debug=limit", *TINY,
        "trainer.max_epochs=1", f"paths.log_dir={tmp_path / 'outputs'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    (sweep,) = (tmp_path / "outputs" / "benchmark" / "multiruns").iterdir()
    (job,) = [d for d in sweep.iterdir() if (d / "benchmark_row.json").is_file()]
    logs = {p.name: p.read_text() for p in job.glob("*.log")}
    scored = [name for name, text in logs.items() if "on every source" in text]
    assert len(logs) == 2 and len(scored) == 1 and "rank_1" not in scored[0], logs.keys()
    with open(sweep / "matrix.csv", newline="") as f:
        assert [(c["trained_on"], c["tested_on"]) for c in csv.DictReader(f)] == [("a", "a"), ("a", "h")]


@pytest.mark.slow
def test_benchmark_folds_pool_out_of_fold_in_source_and_average_the_rest(tmp_path):
    """`folds=3`: each row trains 3 times; its in-source cell is every image of the source, pooled from the three
    runs' own test predictions; its other cells are the mean of the three models' cells."""
    from trustthepixels.detector.predictions import labelled, read_predictions
    from trustthepixels.metrics.core import core_metrics

    data = {name: write_image_folder(tmp_path / name, per_class=12, size=40) for name in ("a", "b", "h")}
    sources = "{" + ", ".join(f"{k}: {v}" for k, v in data.items()) + "}"
    result = run_benchmark(
        f"sources={sources}", "test_only=[h]", "folds=3", "debug=limit", *TINY, "trainer.max_epochs=1",
        f"paths.log_dir={tmp_path / 'outputs'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    (sweep,) = (tmp_path / "outputs" / "benchmark" / "multiruns").iterdir()
    with open(sweep / "matrix.csv", newline="") as f:
        by = {(c["trained_on"], c["tested_on"]): c for c in csv.DictReader(f)}
    (row_dir,) = [d for d in sweep.iterdir() if (d / "benchmark_row.json").is_file() and
                  json.loads((d / "benchmark_row.json").read_text())["train_on"] == "a"]  # fmt: skip
    row = json.loads((row_dir / "benchmark_row.json").read_text())
    assert row["folds"] == 3 and len(row["checkpoints"]) == 3
    # In-source: the three runs' own test predictions (train.py's predictions.csv) cover the source once.
    pooled = [p for k in range(3) for p in labelled(read_predictions(row_dir / f"fold{k}" / "predictions.csv"))]
    assert len(pooled) == 24 == int(by[("a", "a")]["images"]) and len({p.path for p in pooled}) == 24
    labels = [p.label for p in pooled]
    assert float(by[("a", "a")]["auroc"]) == pytest.approx(core_metrics(labels, [p.logit for p in pooled])["auroc"])
    assert by[("a", "a")]["in_source"] == "True" and 0 <= float(by[("a", "a")]["coverage"]) <= 1
    # Out of source: the mean of the three models' AUROC on the same images.
    scored = read_predictions(row_dir / "benchmark_predictions.csv")
    per_fold = []
    for k in range(3):
        cell = [p for p in scored if p.context["fold"] == str(k) and p.context["tested_on"] == "h"]
        assert len(cell) == 24
        per_fold.append(core_metrics([p.label for p in cell], [p.logit for p in cell])["auroc"])
    assert float(by[("a", "h")]["auroc"]) == pytest.approx(sum(per_fold) / 3)
    assert float(by[("a", "h")]["auroc_lo"]) <= float(by[("a", "h")]["auroc"]) <= float(by[("a", "h")]["auroc_hi"])
    bad = run_benchmark(f"sources={sources}", "test_only=[h]", "folds=1", cwd=tmp_path)
    assert bad.returncode == 1 and bad.stderr.startswith("Error: folds=1")


def test_folds_with_ddp_are_refused_in_one_line(tmp_path, monkeypatch, capsys):
    """Each fold's DDP ranks would re-run the row from its first fold (Lightning re-runs the command line per fit)."""
    data = {name: write_image_folder(tmp_path / name, per_class=2, size=16) for name in ("a", "b")}
    sources = "{" + ", ".join(f"{k}: {v}" for k, v in data.items()) + "}"
    message = benchmark_refusal(monkeypatch, capsys, f"sources={sources}", "folds=2", "trainer=ddp_sim")
    assert "folds=2 with trainer.strategy=ddp" in message
