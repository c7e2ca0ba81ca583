"""The audit's plots and `report.md`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from trustthepixels.data.ingest.fingerprint import FileRecord
from trustthepixels.tables import markdown_table


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
    classes = report["classes"]
    names = list(classes)
    lines = [f"# Dataset audit: `{report['root']}`", ""]
    if report["warnings"]:
        lines += ["## Warnings", ""] + [f"- **{w}**" for w in report["warnings"]] + [""]
    else:
        lines += ["No metadata shortcut above the threshold and no duplicate across classes.", ""]
    rows: list[list[str]] = []

    def row(label: str, fn) -> None:
        rows.append([label, *(fn(classes[n]) for n in names)])

    def q(d: dict[str, float], fmt: str = "{:.0f}") -> str:
        return " / ".join(fmt.format(d[k]) for k in ("p10", "p50", "p90")) if d else "-"

    row("images", lambda c: str(c["images"]))
    row("formats", lambda c: ", ".join(f"{k} {v}" for k, v in c["formats"].items()))
    row("modes", lambda c: ", ".join(f"{k} {v}" for k, v in c["modes"].items()))
    row("width p10 / p50 / p90", lambda c: q(c["width"]))
    row("height p10 / p50 / p90", lambda c: q(c["height"]))
    row("kB p10 / p50 / p90", lambda c: q({k: v / 1000 for k, v in c["bytes"].items()}, "{:.1f}"))
    row("square", lambda c: f"{c['square_share']:.0%}")
    row("JPEG quality p10 / p50 / p90", lambda c: q(c["jpeg_quality"]))
    lines += ["## Classes", "", *markdown_table(["", *names], rows)]
    baseline = report["metadata_baseline"]
    dup = report["duplicates"]
    lines += [
        "",
        f"Skipped (unusable) files: {len(report['skipped'])}"
        + "".join(f"\n- `{s['file']}`: {s['reason']}" for s in report["skipped"][:20]),
        "",
        "## Duplicates",
        "",
        f"Near-duplicate rule: pHash distance <= {dup['near_duplicate_rule']['max_phash_distance']} and dHash "
        f"distance <= {dup['near_duplicate_rule']['max_dhash_distance']}. Groups: {dup['groups']} "
        f"({dup['images_in_groups']} images), of which {dup['exact_groups']} byte-identical and "
        f"{dup['cross_class_groups']} across classes. Training keeps each group in one split.",
        "",
    ]
    for group in dup["list"][:15]:
        lines.append(
            f"- {'exact' if group['exact'] else 'near'} ({', '.join(group['classes'])}): "
            + ", ".join(f"`{f}`" for f in group["files"])
        )
    lines += [
        "",
        "## Metadata-only baseline",
        "",
        f"{baseline['model']}, {baseline['folds']}-fold cross-validated balanced accuracy: "
        f"**{baseline['balanced_accuracy']:.1%}** (± {baseline['balanced_accuracy_std']:.1%}); 50% is chance, "
        "whatever the class balance.",
        "",
    ]
    single = [[k, f"{v:.1%}"] for k, v in baseline["single_feature_accuracy"].items()]
    lines += markdown_table(["feature", "best single-threshold balanced accuracy"], single)
    spectral = report["spectral_baseline"]
    lines += [
        "",
        "## Spectrum baseline (Durall et al., 2020)",
        "",
        f"{spectral['model']}, {spectral['folds']}-fold cross-validated balanced accuracy: "
        f"**{spectral['balanced_accuracy']:.1%}** (± {spectral['balanced_accuracy_std']:.1%}). No deep model: if "
        "this is high, the classes differ in frequency content, and a CNN's score may rest on it.",
    ]
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)
