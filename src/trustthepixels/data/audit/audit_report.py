"""The audit's plots and `report.md`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from trustthepixels.data.ingest.fingerprint import FileRecord
from trustthepixels.tables import markdown_table, render

TEMPLATE = Path(__file__).with_name("audit_report.md")  # report.md's text, a Jinja template


def plot(by_class: dict[str, list[FileRecord]], qualities: dict[str, list[int]], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (field, unit) in zip(axes, (("width", "px"), ("height", "px"), ("bytes", "kB")), strict=True):
        for name, records in by_class.items():
            values = [getattr(r, field) / (1000 if unit == "kB" else 1) for r in records]
            ax.hist(values, bins=40, alpha=0.55, label=name)
        ax.set_xlabel(f"{field} ({unit})")
        ax.set_ylabel("images")
        ax.legend()
    fig.suptitle("Image size and file size per class")
    fig.tight_layout()
    fig.savefig(out_dir / "sizes.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, field in zip(axes[:2], ("format", "mode"), strict=True):
        names = sorted({getattr(r, field) for records in by_class.values() for r in records})
        for k, (cls, records) in enumerate(by_class.items()):
            counts = Counter(getattr(r, field) for r in records)
            ax.bar(np.arange(len(names)) + 0.4 * k, [counts[n] for n in names], width=0.4, label=cls)
        ax.set_xticks(np.arange(len(names)) + 0.2, names)
        ax.set_title(f"source {field}")
        ax.legend()
    for name, values in qualities.items():
        axes[2].hist(values, bins=range(0, 102, 2), alpha=0.55, label=name)
    axes[2].set_title("estimated JPEG quality")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "formats.png", dpi=100)
    plt.close(fig)
    return ["sizes.png", "formats.png"]


def markdown(report: dict[str, Any], figures: list[str]) -> str:
    """report.md: `audit_report.md` filled in from the audit (audit.json) and its figures."""
    classes = report["classes"]
    names = list(classes)

    def q(d: dict[str, float], fmt: str = "{:.0f}") -> str:
        return " / ".join(fmt.format(d[k]) for k in ("p10", "p50", "p90")) if d else "-"

    rows = {
        "images": lambda c: str(c["images"]),
        "formats": lambda c: ", ".join(f"{k} {v}" for k, v in c["formats"].items()),
        "modes": lambda c: ", ".join(f"{k} {v}" for k, v in c["modes"].items()),
        "width p10 / p50 / p90": lambda c: q(c["width"]),
        "height p10 / p50 / p90": lambda c: q(c["height"]),
        "kB p10 / p50 / p90": lambda c: q({k: v / 1000 for k, v in c["bytes"].items()}, "{:.1f}"),
        "square": lambda c: f"{c['square_share']:.0%}",
        "JPEG quality p10 / p50 / p90": lambda c: q(c["jpeg_quality"]),
    }
    table = markdown_table(["", *names], ([label, *(fn(classes[n]) for n in names)] for label, fn in rows.items()))
    baseline = report["metadata_baseline"]
    single = [[k, f"{v:.1%}"] for k, v in baseline["single_feature_accuracy"].items()]
    return render(
        TEMPLATE,
        root=report["root"],
        warnings=report["warnings"],
        classes="\n".join(table),
        skipped=report["skipped"],
        dup=report["duplicates"],
        metadata=baseline,
        single_features="\n".join(markdown_table(["feature", "best single-threshold balanced accuracy"], single)),
        spectral=report["spectral_baseline"],
        figures=figures,
    )
