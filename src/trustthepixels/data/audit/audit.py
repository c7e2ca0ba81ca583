"""Describe a dataset before trusting a model trained on it: what the files are, what repeats, and whether
file metadata alone (size, format, compression) already separates the classes, i.e. whether a classifier
can cheat. Writes `audit.json`, `report.md` and PNG plots.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from trustthepixels.data.audit.audit_report import markdown, plot
from trustthepixels.data.audit.baselines import metadata_baseline, metadata_features, spectral_baseline
from trustthepixels.data.audit.dedup import DEFAULT_DHASH_DISTANCE, DEFAULT_PHASH_DISTANCE, duplicate_groups
from trustthepixels.data.audit.jpeg_quality import jpeg_quality
from trustthepixels.data.ingest.fingerprint import FileRecord
from trustthepixels.data.ingest.scan import LABELS, scan_dataset

log = logging.getLogger(__name__)
QUANTILES = (0, 10, 25, 50, 75, 90, 100)
METADATA_FEATURES = ("width", "height", "aspect", "megapixels", "bytes_per_pixel", "is_jpeg", "is_png", "is_square")


# ------------------------------------------------------------------------------------------------- summaries


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {f"p{q}": float(v) for q, v in zip(QUANTILES, np.percentile(values, QUANTILES), strict=True)}


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

    x = np.array([metadata_features(r) for r in usable], dtype=np.float64)
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
    figures = plot(by_class, qualities, out_dir)
    (out_dir / "report.md").write_text(markdown(report, figures))
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
