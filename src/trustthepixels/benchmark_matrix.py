"""The generalization matrix at a benchmark sweep's root: `matrix.csv` (one line per cell), `matrix.md`, `matrix.png`
and a TensorBoard run, rebuilt from every finished row's `benchmark_row.json` by `MatrixWriter`, a Hydra callback,
after each job (whatever launcher ran it, wherever) and once at the end."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from trustthepixels.benchmark import ABSTENTION, LEAVE_OUT, ROW_FILE
from trustthepixels.data.ingest.fileutils import atomic_write_text
from trustthepixels.metrics.intervals import clopper_pearson

log = logging.getLogger(__name__)


def read_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every finished row, single sources first (in the sources' order), then the leave-one-out rows."""
    found = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob(f"*/{ROW_FILE}"))]
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
    mean = lambda key, inside: float(np.nanmean([c[key] for c in cells if c["in_source"] == inside]))  # noqa: E731
    counts = sum(c["in_source"] for c in cells), sum(not c["in_source"] for c in cells)
    line = (
        f"Mean in-source AUROC {mean('auroc', True):.3f} ({counts[0]} cells), "
        f"mean out-of-source AUROC {mean('auroc', False):.3f} ({counts[1]} cells)"
    )
    if cells and all("coverage" in c for c in cells):
        outside = [c for c in cells if not c["in_source"]]
        # Pooled: every out-of-source image counts once, whatever its cell's size.
        wrong = sum(c["confident_errors"] * c["images"] for c in outside)
        line += (
            f"; mean in-source coverage {mean('coverage', True):.2f} and accuracy on answered images "
            f"{mean('accuracy_answered', True):.2f}, out-of-source confident-error rate "
            f"{wrong / max(1, sum(c['images'] for c in outside)):.3f} (pooled; mean of cells "
            f"{mean('confident_errors', False):.3f})"
        )
        if any("familiarity_auroc" in c for c in outside):
            familiar = float(np.nanmean([c.get("familiarity_auroc", np.nan) for c in outside]))
            line += f", mean familiarity AUROC {familiar:.3f}"
    return line


def promise_table(found: list[dict[str, Any]]) -> list[str]:
    """Per row and class, on its own (in-source) test split: the share of images whose prediction set holds their
    label, against the binomial band of 1 - alpha for that many images."""
    rows = [(row["train_on"], name, c["promise"]) for row in found for name, c in row["cells"].items()
            if "promise" in c]  # fmt: skip
    if not rows:
        return []
    lines = [
        "## The promise on each row's own test split",
        "",
        "Share of test images whose prediction set holds their true label (exact 95% interval), against the range",
        "1 - alpha allows for that many images (binomial, 95%); holds: at or above the band's low end.",
        "",
        "| trained on | tested on | class | images | set coverage | 1 - alpha band | holds |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, column, promise in rows:
        for name in ("AI", "Real"):
            r = promise[name]
            low, high = r["set_coverage_band"]
            within = "yes" if r["set_coverage"] >= low else "no"  # above the band: conservative, not broken
            lines.append(
                f"| {row} | {column} | {name} | {r['images']} | {r['set_coverage']:.3f} [{r['set_coverage_lo']:.3f}, "
                f"{r['set_coverage_hi']:.3f}] | [{low:.3f}, {high:.3f}] | {within} |"
            )
    return [*lines, ""]


def recalibration_table(found: list[dict[str, Any]]) -> list[str]:
    """benchmark.py recalibrate=true: per out-of-source cell and class, the row's own record and the record fitted on
    half of the cell, both checked on the other half; then the pooled confident-error rate per class."""
    cells = [(row["train_on"], name, c["recalibrated"]) for row in found for name, c in row["cells"].items()
             if "recalibrated" in c]  # fmt: skip
    if not cells:
        return []

    def shown(rates: dict[str, float], key: str) -> str:
        value = rates.get(key)
        if value is None or value != value:
            return "-"
        return f"{value:.2f} [{rates[f'{key}_lo']:.2f}, {rates[f'{key}_hi']:.2f}]"

    lines = [
        "## Recalibrated on each out-of-source cell",
        "",
        "Each row's detector recalibrated on a seeded half of the cell (per class) and checked on the other half,",
        "beside its own record on that half. 95% exact intervals. A cell it cannot separate should answer little.",
        "",
        "| trained on | tested on | class | images | before: coverage | before: confident errors | after: coverage "
        "| after: accuracy on answered | after: confident errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    pooled = {name: [0, 0] for name in ("AI", "Real")}
    for row, column, result in cells:
        if "note" in result:
            lines.append(f"| {row} | {column} | - | - | {result['note']} | | | | |")
            continue
        for name in ("AI", "Real"):
            before, after = result["before"][name], result["after"][name]
            pooled[name][0] += round(after["confident_errors"] * after["images"])
            pooled[name][1] += after["images"]
            lines.append(
                f"| {row} | {column} | {name} | {after['images']} | {shown(before, 'coverage')} | "
                f"{shown(before, 'confident_errors')} | {shown(after, 'coverage')} | "
                f"{shown(after, 'accuracy_answered')} | {shown(after, 'confident_errors')} |"
            )
    summary = []
    for name, (wrong, images) in pooled.items():
        low, high = clopper_pearson(wrong, images)
        summary.append(f"{name} {wrong / max(1, images):.3f} [{low:.3f}, {high:.3f}] ({images} images)")
    return [*lines, "", "Pooled confident-error rate after recalibration: " + "; ".join(summary), ""]


def write_matrix(sweep_dir: Path) -> list[dict[str, Any]]:
    """matrix.csv (one line per cell), matrix.md, matrix.png and a TensorBoard run at the sweep's root, rebuilt
    under a lock (rows finishing at once on several machines) and each file replaced atomically."""
    with FileLock(sweep_dir / ".matrix.lock"):
        found = read_rows(sweep_dir)
        if found:
            _write_matrix_files(sweep_dir, found)
    return found


def _write_matrix_files(sweep_dir: Path, found: list[dict[str, Any]]) -> None:
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
    line = summary_line(found)
    lines = [
        f"# Generalization matrix: {found[0]['model']}",
        "",
        "Rows: trained on; columns: tested on. AUROC [95% interval] and accuracy at the row's validation threshold;",
        "**bold**: in-source (the row trained on that source). Test-only sources are scored on all their images.",
        "With abstention: answered = share of images given a definite verdict, wrong = share given a wrong one;",
        "familiarity AUROC: how well the familiarity score tells that source's images from the row's own test split.",
        "",
        "| trained on | " + " | ".join(f"{c} ({found[0]['cells'][c]['images']})" for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row in found:
        cells = []
        for column in columns:
            c = row["cells"][column]
            text = f"{c['auroc']:.3f} [{c['auroc_lo']:.3f}, {c['auroc_hi']:.3f}]<br>acc {c['acc']:.3f}"
            if "coverage" in c:
                text += f"<br>answered {c['coverage']:.2f}, wrong {c['confident_errors']:.2f}"
            if "familiarity_auroc" in c:
                text += f"<br>familiarity AUROC {c['familiarity_auroc']:.2f}"
            cells.append(f"**{text}**" if c["in_source"] else text)
        lines.append(f"| {row['train_on']} | " + " | ".join(cells) + " |")
    lines += ["", line, ""]
    lines += promise_table(found)
    lines += recalibration_table(found)
    atomic_write_text(sweep_dir / "matrix.md", "\n".join(lines))
    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter

    figure = _heatmap(found, columns)
    partial = sweep_dir / ".matrix.png.tmp"
    figure.savefig(partial, dpi=120, bbox_inches="tight", format="png")
    os.replace(partial, sweep_dir / "matrix.png")
    with SummaryWriter(str(sweep_dir / "tensorboard")) as tensorboard:
        tensorboard.add_figure("benchmark/matrix", figure)
        tensorboard.add_text("benchmark/matrix", "\n".join(lines))
    plt.close(figure)


def _heatmap(found: list[dict[str, Any]], columns: list[str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.array([[r["cells"][c]["auroc"] for c in columns] for r in found])
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(columns), 1.0 + 0.6 * len(found)))
    image = ax.imshow(values, cmap="RdYlGn", vmin=0.3, vmax=1.0)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(found)), [r["train_on"] for r in found])
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    for i, row in enumerate(found):
        for j, column in enumerate(columns):
            c = row["cells"][column]
            weight = "bold" if c["in_source"] else "normal"
            ax.text(j, i, f"{c['auroc']:.2f}\n[{c['auroc_lo']:.2f}, {c['auroc_hi']:.2f}]", ha="center",
                    va="center", fontsize=7, fontweight=weight)  # fmt: skip
    fig.colorbar(image, ax=ax, label="AUROC")
    ax.set_title(f"{found[0]['model']}: {summary_line(found)}", fontsize=8)
    return fig


class MatrixWriter(Callback):
    """Rebuilds the matrix after every job (whatever launcher ran it, wherever) and once at the end."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            write_matrix(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        found = write_matrix(sweep_dir)
        if found:
            log.info("Generalization matrix: %s\n%s", sweep_dir / "matrix.md", summary_line(found))
