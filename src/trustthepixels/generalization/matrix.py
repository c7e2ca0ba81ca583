"""The generalization matrix at a benchmark sweep's root: `matrix.csv` (one line per cell), `matrix.md`, `matrix.png`
and a TensorBoard run, rebuilt from every finished row's `benchmark_row.json` by `MatrixWriter`, a Hydra callback,
after each job (whatever launcher ran it, wherever) and once at the end."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from scipy import stats

from trustthepixels.config import to_plain
from trustthepixels.data.ingest.fileutils import atomic_write_text
from trustthepixels.detector.predictions import read_predictions
from trustthepixels.generalization.rows import ABSTENTION, LEAVE_OUT, PREDICTIONS_FILE, ROW_FILE
from trustthepixels.metrics.intervals import clopper_pearson
from trustthepixels.metrics.paired_tests import delong
from trustthepixels.tables import markdown_table, render, with_interval

log = logging.getLogger(__name__)
TEMPLATE = Path(__file__).with_name("matrix_report.md")  # matrix.md's text, a Jinja template


def read_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every finished row, single sources first (in the sources' order), then the leave-one-out rows."""
    found = [json.loads(p.read_text()) | {"dir": str(p.parent)} for p in sorted(sweep_dir.glob(f"*/{ROW_FILE}"))]
    columns = list(found[0]["cells"]) if found else []

    def order(row: dict[str, Any]) -> tuple[bool, int]:
        name = row["train_on"]
        left_out = name.startswith(LEAVE_OUT)
        source = name.removeprefix(LEAVE_OUT) if left_out else name
        return left_out, columns.index(source) if source in columns else len(columns)

    return sorted(found, key=order)


def summary_line(found: list[dict[str, Any]]) -> str:
    """Mean in-source vs mean out-of-source AUROC over the matrix's cells; with abstention, mean in-source coverage
    and accuracy on answered images vs mean out-of-source confident-error rate."""
    cells = [c for r in found for c in r["cells"].values()]

    def mean(key: str, inside: bool) -> float:  # NaN cells (accuracy where nothing was answered) left out
        values = [c[key] for c in cells if c["in_source"] == inside and np.isfinite(c[key])]
        return float(np.mean(values)) if values else float("nan")

    counts = sum(c["in_source"] for c in cells), sum(not c["in_source"] for c in cells)
    line = (
        f"Mean in-source AUROC {mean('auroc', True):.3f} ({counts[0]} cells), "
        f"mean out-of-source AUROC {mean('auroc', False):.3f} ({counts[1]} cells)"
    )
    if cells and all("coverage" in c for c in cells):
        outside = [c for c in cells if not c["in_source"]]
        # Pooled: every out-of-source image counts once, whatever its cell's size.
        wrong = sum(c["confident_errors"] * c["images"] for c in outside)
        accuracy = mean("accuracy_answered", True)
        answered = f"{accuracy:.2f}" if np.isfinite(accuracy) else "- (none answered)"
        line += (
            f"; mean in-source coverage {mean('coverage', True):.2f} and accuracy on answered images "
            f"{answered}, out-of-source confident-error rate "
            f"{wrong / max(1, sum(c['images'] for c in outside)):.3f} (pooled; mean of cells "
            f"{mean('confident_errors', False):.3f})"
        )
        if any("familiarity_auroc" in c for c in outside):
            familiar = float(np.nanmean([c.get("familiarity_auroc", np.nan) for c in outside]))
            line += f", mean familiarity AUROC {familiar:.3f}"
    return line


def promise_table(found: list[dict[str, Any]]) -> str:
    """Per row and class, on its own (in-source) test split: the share of images whose prediction set holds their
    label, against the band a promise of 1 - alpha allows (`promise_band`) ("" without abstention)."""
    rows = [
        (row["train_on"], name, c["promise"]) for row in found for name, c in row["cells"].items() if "promise" in c
    ]
    table = []
    for row, column, promise in rows:
        for name in ("AI", "Real"):
            r = promise[name]
            low, high = r["set_coverage_band"]
            within = "yes" if r["set_coverage"] >= low else "no"  # above the band: conservative, not broken
            band = f"[{low:.3f}, {high:.3f}]"
            table.append([row, column, name, r["images"], with_interval(r, "set_coverage"), band, within])
    header = ["trained on", "tested on", "class", "images", "set coverage", "1 - alpha band", "holds"]
    return "\n".join(markdown_table(header, table)) if table else ""


def recalibration_table(found: list[dict[str, Any]]) -> dict[str, str] | None:
    """benchmark.py recalibrate=true: per out-of-source cell and class, the row's own record and the record fitted on
    half of the cell, both checked on the other half (`table`); the pooled confident-error rate per class (`pooled`)."""
    cells = [
        (row["train_on"], name, c["recalibrated"])
        for row in found
        for name, c in row["cells"].items()
        if "recalibrated" in c
    ]
    if not cells:
        return None
    header = "trained on | tested on | class | images | before: coverage | before: confident errors | after: coverage"
    header += " | after: accuracy on answered | after: confident errors"
    table = []
    pooled = {name: [0, 0] for name in ("AI", "Real")}
    for row, column, result in cells:
        if "note" in result:
            table.append([row, column, "-", "-", result["note"], "", "", "", ""])
            continue
        for name in ("AI", "Real"):
            before, after = result["before"][name], result["after"][name]
            pooled[name][0] += round(after["confident_errors"] * after["images"])
            pooled[name][1] += after["images"]
            rates = [with_interval(before, k, "{:.2f}") for k in ("coverage", "confident_errors")]
            rates += [with_interval(after, k, "{:.2f}") for k in ("coverage", "accuracy_answered", "confident_errors")]
            table.append([row, column, name, after["images"], *rates])
    summary = []
    for name, (wrong, images) in pooled.items():
        low, high = clopper_pearson(wrong, images)
        summary.append(f"{name} {wrong / max(1, images):.3f} [{low:.3f}, {high:.3f}] ({images} images)")
    return {"table": "\n".join(markdown_table(header.split(" | "), table)), "pooled": "; ".join(summary)}


def _scores(row: dict[str, Any]) -> dict[str, dict[str, tuple[int, float]]]:
    """A row's scored images per column: path within the source -> (label, logit). (Paths, not `Prediction.key`: a
    row trained on one source names it by its folder, a union by its name.)"""
    cells: dict[str, dict[str, tuple[int, float]]] = {}
    for p in read_predictions(Path(row["dir"]) / PREDICTIONS_FILE):
        if p.scored and p.label is not None:
            cells.setdefault(p.context["tested_on"], {})[p.path] = (p.label, p.logit)
    return cells


def _paired(a: dict, b: dict) -> dict | None:
    """DeLong's paired test of two rows on the images both scored; None below 2 images of a class."""
    common = sorted(a.keys() & b.keys())
    labels = np.array([a[k][0] for k in common])
    if min((labels == 1).sum(), (labels == 0).sum()) < 2:
        return None
    test = delong(labels, np.array([a[k][1] for k in common]), np.array([b[k][1] for k in common]))
    return test | {"ai": int((labels == 1).sum()), "real": int((labels == 0).sum())}


def comparison_tables(
    found: list[dict[str, Any]], baseline: str | None, focus: Sequence[str], generators: Mapping[str, str]
) -> dict[str, Any] | None:
    """Each row against the `baseline` row on the same images (`table`): DeLong's paired test per column, the mean of
    the differences over the `focus` columns (independent image sets: their variances add), and, for the sources in
    `generators` (a provenance CSV: out -> source_file, named <generator>_...), one table per source (`generators`)
    with a cell per generator: its AI images against all the source's real ones."""
    names = [r["train_on"] for r in found]
    if not baseline or baseline not in names or len(found) < 2:
        return None
    scores = {r["train_on"]: _scores(r) for r in found}
    base = scores[baseline]
    table = []
    for name in names:
        if name == baseline:
            continue
        cells, diffs = [], []
        for column in found[0]["cells"]:
            test = _paired(scores[name].get(column, {}), base.get(column, {}))
            if test is None:
                cells.append("-")
                continue
            cells.append(f"{test['difference']:+.3f} [{test['low']:+.3f}, {test['high']:+.3f}], p = {test['p']:.2g}")
            if column in focus:
                diffs.append((test["difference"], test["se"]))
        mean = "-"
        if diffs and len(diffs) == len(focus):
            value = float(np.mean([d for d, _ in diffs]))
            se = float(np.sqrt(sum(s**2 for _, s in diffs))) / len(diffs)
            p = float(2 * stats.norm.sf(abs(value / se))) if se > 0 else float(value == 0)
            mean = f"{value:+.3f} [{value - 1.96 * se:+.3f}, {value + 1.96 * se:+.3f}], p = {p:.2g}"
        table.append([name, *cells, mean])
    paired = markdown_table(["trained on", *found[0]["cells"], f"mean of {', '.join(focus)}"], table)
    per_generator = {}
    for column, provenance in generators.items():
        if column not in found[0]["cells"]:
            continue
        family = _generators(Path(provenance))
        present = sorted({family[k] for k in base.get(column, {}) if k in family and base[column][k][0] == 1})
        table = []
        for name in names:
            cells = []
            for generator in present:
                subset = {k for k, (label, _) in base[column].items() if label == 0 or family.get(k) == generator}
                mine = {k: v for k, v in scores[name].get(column, {}).items() if k in subset}
                chance = {k: (label, 0.0) for k, (label, _) in mine.items()}  # a constant score: AUROC 0.5, no variance
                own = _paired(mine, chance)
                text = "-" if own is None else f"{own['auroc_a']:.3f} [{own['low'] + 0.5:.3f}, {own['high'] + 0.5:.3f}]"
                if name != baseline and own is not None:
                    test = _paired(mine, {k: v for k, v in base[column].items() if k in subset})
                    text += f"<br>{test['difference']:+.3f}, p = {test['p']:.2g}"
                cells.append(text)
            table.append([name, *cells])
        counts = [f"{g} ({sum(family.get(k) == g for k in base[column])})" for g in present]
        per_generator[column] = "\n".join(markdown_table(["trained on", *counts], table))
    return {"table": "\n".join(paired), "generators": per_generator}


def _generators(provenance: Path) -> dict[str, str]:
    """out path -> generator, from a ../shared provenance CSV whose source files are named <generator>_..."""
    with open(provenance, newline="") as f:
        return {
            row["out"]: Path(row["source_file"]).name.split("_")[0]
            for row in csv.DictReader(f)
            if row["out"].startswith("AI/")
        }


def write_matrix(sweep_dir: Path, comparison: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """matrix.csv (one line per cell), matrix.md, matrix.png and a TensorBoard run at the sweep's root, rebuilt
    under a lock (rows finishing at once on several machines) and each file replaced atomically. `comparison`:
    baseline, focus and generators of `comparison_tables`."""
    with FileLock(sweep_dir / ".matrix.lock"):
        found = read_rows(sweep_dir)
        if found:
            _write_matrix_files(sweep_dir, found, dict(comparison or {}))
    return found


def _write_matrix_files(sweep_dir: Path, found: list[dict[str, Any]], comparison: dict[str, Any]) -> None:
    columns = list(found[0]["cells"])
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    fields = ["auroc", "auroc_lo", "auroc_hi", "acc", "acc_lo", "acc_hi", "images", "in_source"]
    present = {k for row in found for cell in row["cells"].values() for k in cell}
    fields += [f"{k}{end}" for k in ABSTENTION for end in ("", "_lo", "_hi") if k in present]
    writer.writerow(["trained_on", "tested_on", *fields])
    for row in found:
        for column in columns:
            writer.writerow([row["train_on"], column, *(row["cells"][column].get(k, "") for k in fields)])
    atomic_write_text(sweep_dir / "matrix.csv", text.getvalue())
    table = []
    for row in found:
        cells = []
        for column in columns:
            c = row["cells"][column]
            text = f"{with_interval(c, 'auroc')}<br>acc {c['acc']:.3f}"
            if "coverage" in c:
                text += f"<br>answered {c['coverage']:.2f}, wrong {c['confident_errors']:.2f}"
            if "familiarity_auroc" in c:
                text += f"<br>familiarity AUROC {c['familiarity_auroc']:.2f}"
            cells.append(f"**{text}**" if c["in_source"] else text)
        table.append([row["train_on"], *cells])
    header = ["trained on", *(f"{c} ({found[0]['cells'][c]['images']})" for c in columns)]
    c = comparison
    text = render(
        TEMPLATE,
        model=found[0]["model"],
        matrix="\n".join(markdown_table(header, table)),
        summary=summary_line(found),
        baseline=c.get("baseline"),
        paired=comparison_tables(found, c.get("baseline"), c.get("focus") or [], c.get("generators") or {}),
        promise=promise_table(found),
        recalibrated=recalibration_table(found),
    )
    atomic_write_text(sweep_dir / "matrix.md", text)
    figure = _heatmap(found, columns)
    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter

    partial = sweep_dir / ".matrix.png.tmp"
    figure.savefig(partial, dpi=120, bbox_inches="tight", format="png")
    os.replace(partial, sweep_dir / "matrix.png")
    with SummaryWriter(str(sweep_dir / "tensorboard")) as tensorboard:
        tensorboard.add_figure("benchmark/matrix", figure)
        tensorboard.add_text("benchmark/matrix", text)
    plt.close(figure)


def _heatmap(found: list[dict[str, Any]], columns: list[str]):
    from trustthepixels.evaluation.figures import new_figure

    values = np.array([[r["cells"][c]["auroc"] for c in columns] for r in found])
    size = (1.6 + 1.5 * len(columns), 1.0 + 0.6 * len(found))
    fig, ax = new_figure(size, f"{found[0]['model']}: {summary_line(found)}", xlabel="tested on", ylabel="trained on")
    ax.title.set_fontsize(8)
    image = ax.imshow(values, cmap="RdYlGn", vmin=0.3, vmax=1.0)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(found)), [r["train_on"] for r in found])
    for i, row in enumerate(found):
        for j, column in enumerate(columns):
            c = row["cells"][column]
            text = f"{c['auroc']:.2f}\n[{c['auroc_lo']:.2f}, {c['auroc_hi']:.2f}]"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, fontweight="bold" if c["in_source"] else "normal")
    fig.colorbar(image, ax=ax, label="AUROC")
    return fig


class MatrixWriter(Callback):
    """Rebuilds the matrix after every job (whatever launcher ran it, wherever) and once at the end."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            write_matrix(Path(config.hydra.sweep.dir), to_plain(config.get("comparison")))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        found = write_matrix(sweep_dir, to_plain(config.get("comparison")))
        if found:
            log.info("Generalization matrix: %s\n%s", sweep_dir / "matrix.md", summary_line(found))
