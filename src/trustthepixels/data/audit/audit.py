"""Describe a dataset before trusting a model trained on it: what the files are, what repeats, and whether
file metadata alone (size, format, compression) already separates the classes, i.e. whether a classifier
can cheat. Writes `audit.json`, `report.md` and PNG plots.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trustthepixels.data.audit.dedup import DEFAULT_DHASH_DISTANCE, DEFAULT_PHASH_DISTANCE, duplicate_groups
from trustthepixels.data.audit.spectrum import azimuthal_spectrum
from trustthepixels.data.sources.fingerprint import FileRecord
from trustthepixels.data.sources.scan import LABELS, scan_dataset

log = logging.getLogger(__name__)
QUANTILES = (0, 10, 25, 50, 75, 90, 100)
METADATA_FEATURES = ("width", "height", "aspect", "megapixels", "bytes_per_pixel", "is_jpeg", "is_png", "is_square")


# --------------------------------------------------------------------------------------------- JPEG quality


@lru_cache(maxsize=1)
def _reference_tables() -> np.ndarray:
    """Pillow's (libjpeg's) luminance quantisation table at each quality 1..100, in Pillow's own order."""
    tables = []
    for quality in range(1, 101):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, "JPEG", quality=quality)
        tables.append(Image.open(buffer).quantization[0])
    return np.array(tables, dtype=np.float64)


def jpeg_quality(path: Path) -> int | None:
    """The libjpeg quality whose luminance table is closest to the file's (an estimate for other encoders)."""
    try:
        with Image.open(path) as img:
            if img.format != "JPEG" or not getattr(img, "quantization", None):
                return None
            table = np.array(img.quantization[0], dtype=np.float64)
    except OSError:
        return None
    return int(np.abs(_reference_tables() - table).sum(axis=1).argmin()) + 1


# ------------------------------------------------------------------------------------------------- summaries


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {f"p{q}": float(v) for q, v in zip(QUANTILES, np.percentile(values, QUANTILES), strict=True)}


def _features(record: FileRecord) -> list[float]:
    w, h = record.width, record.height
    return [w, h, w / h, w * h / 1e6, record.bytes / (w * h), record.format == "JPEG", record.format == "PNG", w == h]


def _class_summary(records: list[FileRecord], qualities: list[int]) -> dict[str, Any]:
    return {
        "images": len(records),
        "formats": dict(Counter(r.format for r in records).most_common()),
        "modes": dict(Counter(r.mode for r in records).most_common()),
        "width": _quantiles([r.width for r in records]),
        "height": _quantiles([r.height for r in records]),
        "bytes": _quantiles([r.bytes for r in records]),
        "square_share": float(np.mean([r.width == r.height for r in records])) if records else 0.0,
        "jpeg_quality": _quantiles(qualities),
    }


def metadata_baseline(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 42) -> dict[str, Any]:
    """Cross-validated balanced accuracy (chance is 50% whatever the class balance) of a logistic regression on
    metadata alone, and of each feature's best threshold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    folds = max(2, min(folds, int(np.bincount(y).min())))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_score(model, x, y, cv=cv, scoring="balanced_accuracy")
    single = {
        name: float(
            cross_val_score(
                DecisionTreeClassifier(max_depth=1), x[:, [i]], y, cv=cv, scoring="balanced_accuracy"
            ).mean()
        )
        for i, name in enumerate(METADATA_FEATURES)
    }
    return {
        "model": "logistic regression on " + ", ".join(METADATA_FEATURES),
        "folds": folds,
        "balanced_accuracy": float(scores.mean()),
        "balanced_accuracy_std": float(scores.std()),
        "single_feature_accuracy": dict(sorted(single.items(), key=lambda kv: -kv[1])),
    }


def spectral_baseline(paths: list[Path], y: np.ndarray, folds: int = 5, seed: int = 42) -> dict[str, Any]:
    """Cross-validated balanced accuracy of a logistic regression on each image's azimuthally averaged power
    spectrum (Durall et al., 2020): what frequency content alone says about the class."""
    from concurrent.futures import ThreadPoolExecutor

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # numpy's FFT releases the GIL
        x = np.array(list(pool.map(azimuthal_spectrum, paths)))
    folds = max(2, min(folds, int(np.bincount(y).min())))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=0.1))
    scores = cross_val_score(model, x, y, cv=cv, scoring="balanced_accuracy")
    return {
        "model": f"logistic regression on the azimuthal power spectrum ({x.shape[1]} radial bins)",
        "folds": folds,
        "balanced_accuracy": float(scores.mean()),
        "balanced_accuracy_std": float(scores.std()),
    }


# -------------------------------------------------------------------------------------------------- the audit


def audit_dataset(
    root: Path | str,
    out_dir: Path | str,
    cache_dir: Path | str | None = None,
    max_phash: int = DEFAULT_PHASH_DISTANCE,
    max_dhash: int = DEFAULT_DHASH_DISTANCE,
    cheat_threshold: float = 0.6,
    folds: int = 5,
    seed: int = 42,
    min_side: int = 8,
) -> dict[str, Any]:
    """`min_side` is training's `data.min_image_side`: the audit counts the images training would use."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scan = scan_dataset(root, min_side=min_side, cache_dir=cache_dir)
    label_of = {s.relpath: s.label for s in scan.samples}
    usable = [scan.records[s.relpath] for s in scan.samples]
    by_class = {name: [r for r in usable if label_of[r.relpath] == label] for label, name in LABELS.items()}
    qualities = {
        name: [q for r in records if (q := jpeg_quality(scan.root / r.relpath)) is not None]
        for name, records in by_class.items()
    }

    groups = duplicate_groups(usable, max_phash, max_dhash)
    sha = {r.relpath: r.sha256 for r in usable}
    described = []
    for group in groups:
        classes = sorted({LABELS[label_of[p]] for p in group})
        exact = len({sha[p] for p in group}) == 1
        described.append({"files": group, "classes": classes, "exact": exact})
    cross = [g for g in described if len(g["classes"]) > 1]

    x = np.array([_features(r) for r in usable], dtype=np.float64)
    y = np.array([label_of[r.relpath] for r in usable])
    baseline = metadata_baseline(x, y, folds, seed)
    spectral = spectral_baseline([scan.root / r.relpath for r in usable], y, folds, seed)

    warnings = []
    if baseline["balanced_accuracy"] > cheat_threshold:
        top = ", ".join(f"{k} ({v:.0%})" for k, v in list(baseline["single_feature_accuracy"].items())[:3])
        warnings.append(
            f"File metadata alone predicts the class with {baseline['balanced_accuracy']:.1%} balanced accuracy "
            f"(more than "
            f"{cheat_threshold:.0%}): a classifier can cheat by learning image size, format or compression "
            f"instead of generation artefacts. Most telling: {top}. Normalise these (same format, size and "
            "JPEG quality for both classes) or evaluate on data where they do not differ."
        )
    if spectral["balanced_accuracy"] > cheat_threshold:
        warnings.append(
            f"The power spectrum alone predicts the class with {spectral['balanced_accuracy']:.1%} balanced "
            f"accuracy (more than {cheat_threshold:.0%}): frequency content (up-sampling traces, or resizing and "
            "compression that differ between the classes) separates them. A CNN may learn the same thing: check "
            "that it holds on sources processed differently (eval.py extra_sets=...)."
        )
    if cross:
        warnings.append(
            f"{len(cross)} duplicate group(s) hold images of both classes: the same picture is labelled AI and "
            "Real. A classifier cannot be right on both; remove or relabel them (listed in audit.json)."
        )
    report = {
        "root": str(scan.root),
        "classes": {name: _class_summary(records, qualities[name]) for name, records in by_class.items()},
        "skipped": [{"file": p, "class": LABELS[label], "reason": reason} for p, label, reason in scan.skipped],
        "duplicates": {
            "near_duplicate_rule": {"max_phash_distance": max_phash, "max_dhash_distance": max_dhash},
            "groups": len(described),
            "images_in_groups": sum(len(g["files"]) for g in described),
            "exact_groups": sum(g["exact"] for g in described),
            "cross_class_groups": len(cross),
            "list": described,
        },
        "metadata_baseline": baseline,
        "spectral_baseline": spectral,
        "warnings": warnings,
    }
    (out_dir / "audit.json").write_text(json.dumps(report, indent=2) + "\n")
    figures = _plot(by_class, qualities, out_dir)
    (out_dir / "report.md").write_text(_markdown(report, figures))
    log.info("Audit of %s written to %s", scan.root, out_dir)
    for warning in warnings:
        log.warning(warning)
    return report


def audit(cfg) -> dict[str, Any]:
    """`audit_data.py`: the audit with the data settings training uses."""
    near = cfg.data.near_duplicates or {"phash": 0, "dhash": 0}
    return audit_dataset(
        cfg.data.root,
        cfg.paths.output_dir,
        cfg.data.cache_dir,
        near["phash"],
        near["dhash"],
        cfg.cheat_threshold,
        cfg.folds,
        cfg.seed,
        cfg.data.min_image_side,
    )


def _plot(by_class: dict[str, list[FileRecord]], qualities: dict[str, list[int]], out_dir: Path) -> list[str]:
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


def _markdown(report: dict[str, Any], figures: list[str]) -> str:
    classes = report["classes"]
    names = list(classes)
    lines = [f"# Dataset audit: `{report['root']}`", ""]
    if report["warnings"]:
        lines += ["## Warnings", ""] + [f"- **{w}**" for w in report["warnings"]] + [""]
    else:
        lines += ["No metadata shortcut above the threshold and no duplicate across classes.", ""]
    lines += ["## Classes", "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label: str, fn) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(classes[n]) for n in names) + " |")

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
        "| feature | best single-threshold balanced accuracy |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.1%} |" for k, v in baseline["single_feature_accuracy"].items()]
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
