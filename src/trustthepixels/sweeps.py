"""Sweeps: a summary of every job at the sweep's root (the resumable Optuna sweeper is a Hydra plugin, in
`hydra_plugins/trustthepixels/resumable_optuna.py`).

`SweepSummary` is a Hydra callback. After each job (and once more at the end) it rebuilds `summary.csv` and
`summary.md` from the job directories, so the summary is complete whichever launcher ran the jobs, where,
and in what order; a failed job is a row with its error.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from filelock import FileLock
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from trustthepixels.data.ingest.fileutils import atomic_write_text
from trustthepixels.detector.predictions import Prediction, labelled, read_predictions, write_predictions
from trustthepixels.metric_registry import SUMMARY, metric_mode
from trustthepixels.tables import markdown_table, render, with_interval

log = logging.getLogger(__name__)
ERROR_FILE = "job_error.txt"
TEMPLATE = Path(__file__).with_name("sweep_summary.md")  # summary.md's text, a Jinja template
COLUMNS = ("val/auroc", "val/acc", "test/auroc", "test/acc")


def _job_row(job_dir: Path, optimized_metric: str) -> dict[str, Any] | None:
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return None
    row: dict[str, Any] = {
        "job": job_dir.name,
        "overrides": " ".join(yaml.safe_load(overrides_file.read_text()) or []),
        "run_dir": str(job_dir),
        "status": "running",
        "error": "",
    }
    if (job_dir / "metrics.json").is_file():
        report = json.loads((job_dir / "metrics.json").read_text())
        metrics = {**report.get("val", {}), **report.get("test", {})}
        row |= {"status": "completed"}
        for name in dict.fromkeys([optimized_metric, *COLUMNS]):
            row |= {f"{name}{end}": metrics.get(f"{name}{end}") for end in ("", "_lo", "_hi")}
    elif (job_dir / ERROR_FILE).is_file():
        row |= {"status": "failed", "error": (job_dir / ERROR_FILE).read_text().strip().splitlines()[-1][:300]}
    return row


def _cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if isinstance(value, float):
        return with_interval(row, column, "{:.4f}", "")
    return "" if value is None else str(value)


def _without(overrides: str, prefixes: tuple[str, ...]) -> str:
    return " ".join(o for o in overrides.split() if not o.lstrip("+~").startswith(prefixes))


def _spread(values: list[float]) -> str:
    if not values:
        return ""
    array = np.array(values, dtype=float)
    sd = array.std(ddof=1) if len(array) > 1 else 0.0
    return f"{array.mean():.4f} ± {sd:.4f} (min {array.min():.4f}, max {array.max():.4f})"


def seed_section(rows: list[dict[str, Any]], metrics: list[str]) -> str:
    """Jobs that differ only by `seed`: mean ± standard deviation (and range) per configuration ("" if none)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "completed" and any(o.startswith("seed=") for o in row["overrides"].split()):
            groups.setdefault(_without(row["overrides"], ("seed=",)), []).append(row)
    table = [
        [f"`{config or '(defaults)'}`", len(members), *(_spread(_values(members, c)) for c in metrics)]
        for config, members in groups.items()
        if len(members) > 1
    ]
    return "\n".join(markdown_table(["configuration", "seeds", *metrics], table)) if table else ""


def cross_validation_section(sweep_dir: Path, rows: list[dict[str, Any]], metrics: list[str]) -> list[dict[str, Any]]:
    """Jobs that differ only by `data.fold`, per configuration: per-fold metrics, mean ± sd, and the pooled
    out-of-fold metrics with their intervals, from every fold's test predictions (written to oof_predictions*.csv)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if any(o.startswith("data.fold=") for o in row["overrides"].split()):
            groups.setdefault(_without(row["overrides"], ("data.fold=",)), []).append(row)
    sections = []
    for i, (config, members) in enumerate(sorted(groups.items())):
        members = sorted(members, key=lambda r: int(_override(r["overrides"], "data.fold") or 0))
        done = [m for m in members if m["status"] == "completed"]
        name = "oof_predictions.csv" if len(groups) == 1 else f"oof_predictions_{i}.csv"
        table = [[_override(m["overrides"], "data.fold"), *(_cell(m, c) for c in metrics)] for m in members]
        if done:
            table.append(["mean ± sd", *(_spread(_values(done, c)) for c in metrics)])
        section = {"config": config or "(defaults)", "done": len(done), "folds": len(members), "file": name}
        section |= {"table": "\n".join(markdown_table(["fold", *metrics], table)), "pooled": ""}
        pooled = _pool_out_of_fold(done, sweep_dir / name)
        if pooled and len(done) == len(members):
            section["images"] = int(pooled["images"])
            table = [[key, _cell(pooled, key)] for key in SUMMARY]
            section["pooled"] = "\n".join(markdown_table(["metric", "value [95% interval]"], table))
        sections.append(section)
    return sections


def _values(rows: list[dict[str, Any]], metric: str) -> list[float]:
    return [r[metric] for r in rows if r.get(metric) is not None]


def _override(overrides: str, key: str) -> str | None:
    return next((o.split("=", 1)[1] for o in overrides.split() if o.startswith(f"{key}=")), None)


def _pool_out_of_fold(jobs: list[dict[str, Any]], path: Path) -> dict[str, float] | None:
    """Every fold's test predictions in one file (the one predictions format, a `fold` column in front, each
    row decided at its fold's own threshold), and the metrics of the pooled logits with their intervals."""
    from trustthepixels.metrics.core import core_metrics
    from trustthepixels.metrics.intervals import metric_intervals

    pooled: list[Prediction] = []
    for job in jobs:
        predictions = Path(job["run_dir"]) / "predictions.csv"
        if not predictions.is_file():
            return None
        fold = _override(job["overrides"], "data.fold") or ""
        pooled += [replace(p, context={"fold": fold}) for p in read_predictions(predictions)]
    if not pooled:
        return None
    pooled.sort(key=lambda p: (p.key, p.context["fold"]))
    write_predictions(path, pooled)
    scored = labelled(pooled)
    labels = np.array([p.label for p in scored])
    logits = np.array([p.logit for p in scored])
    return core_metrics(labels, logits) | metric_intervals(labels, logits)


def write_summary(sweep_dir: Path, optimized_metric: str, final: bool = False) -> list[dict[str, Any]]:
    """summary.csv and summary.md at the sweep's root: one row per job, best `optimized_metric` first.
    With `final`, jobs that neither finished nor failed (a killed run's) are marked interrupted."""
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir()] if sweep_dir.is_dir() else []
    rows = [row for p in jobs if (row := _job_row(p, optimized_metric)) is not None]
    for row in rows:
        if final and row["status"] == "running":
            row["status"] = "interrupted"
    sign = 1.0 if metric_mode(optimized_metric) == "min" else -1.0  # best first, whichever way is better
    rows.sort(
        key=lambda r: (
            r["status"] != "completed",
            sign * r[optimized_metric] if r.get(optimized_metric) is not None else float("inf"),
            r["job"],
        )
    )
    metric_columns = [optimized_metric, *[c for c in COLUMNS if c != optimized_metric]]
    columns = [
        "job",
        "status",
        "overrides",
        *[f"{c}{end}" for c in metric_columns for end in ("", "_lo", "_hi")],
        "run_dir",
        "error",
    ]
    with FileLock(sweep_dir / ".summary.lock"):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(sweep_dir / "summary.csv", text.getvalue())
        common = set.intersection(*(set(r["overrides"].split()) for r in rows)) if rows else set()
        shown = [{**r, "overrides": " ".join(o for o in r["overrides"].split() if o not in common)} for r in rows]
        shown_columns = ["job", "status", "overrides", *metric_columns]
        text = render(
            TEMPLATE,
            jobs=len(rows),
            metric=optimized_metric,
            common=" ".join(sorted(common)),
            table="\n".join(markdown_table(shown_columns, [[_cell(row, c) for c in shown_columns] for row in shown])),
            seeds=seed_section(rows, metric_columns),
            folds=cross_validation_section(sweep_dir, rows, metric_columns),
            failed=[r for r in rows if r["status"] == "failed"],
        )
        atomic_write_text(sweep_dir / "summary.md", text)
    return rows


class SweepSummary(Callback):
    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED:
            try:
                job_return.return_value  # noqa: B018 (a failed job's return_value raises its exception)
            except Exception as error:
                atomic_write_text(job_dir / ERROR_FILE, f"{type(error).__name__}: {error}\n")
        write_summary(Path(config.hydra.sweep.dir), config.get("optimized_metric", "val/auroc"))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_summary(sweep_dir, config.get("optimized_metric", "val/auroc"), final=True)
        log.info("Sweep summary: %s (%d jobs)", sweep_dir / "summary.md", len(rows))
