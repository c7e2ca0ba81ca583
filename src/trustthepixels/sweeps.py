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
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from trustthepixels.config import metric_mode
from trustthepixels.data.fileutils import atomic_write_text

log = logging.getLogger(__name__)
ERROR_FILE = "job_error.txt"
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
        row |= {"status": "completed", optimized_metric: metrics.get(optimized_metric)}
        row |= {name: metrics.get(name) for name in COLUMNS}
    elif (job_dir / ERROR_FILE).is_file():
        row |= {"status": "failed", "error": (job_dir / ERROR_FILE).read_text().strip().splitlines()[-1][:300]}
    return row


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
    columns = [
        "job",
        "status",
        "overrides",
        optimized_metric,
        *[c for c in COLUMNS if c != optimized_metric],
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
        lines = [
            f"# Sweep summary ({len(rows)} jobs, sorted by {optimized_metric})",
            "",
            f"Common to all jobs: `{' '.join(sorted(common))}`" if common else "",
            "",
            "| " + " | ".join(columns[:-2]) + " |",
            "|" + "---|" * (len(columns) - 2),
        ]
        for row in shown:
            cells = [
                f"{v:.4f}" if isinstance(v := row.get(c), float) else str(v if v is not None else "")
                for c in columns[:-2]
            ]
            lines.append("| " + " | ".join(cells) + " |")
        failed = [r for r in rows if r["status"] == "failed"]
        if failed:
            lines += ["", "Failed jobs:"] + [f"- job {r['job']} ({r['overrides']}): {r['error']}" for r in failed]
        atomic_write_text(sweep_dir / "summary.md", "\n".join(lines) + "\n")
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
