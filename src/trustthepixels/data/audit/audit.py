"""Describe a dataset before trusting a model trained on it: what the files are, what repeats, and whether
file metadata alone (size, format, compression) already separates the classes, i.e. whether a classifier
can cheat. Writes `audit.json`, `report.md` and PNG plots.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trustthepixels.config import to_plain, validated
from trustthepixels.data.audit.audit_report import markdown, plot
from trustthepixels.data.audit.baselines import metadata_baseline, metadata_features, spectral_baseline
from trustthepixels.data.audit.dedup import duplicate_groups
from trustthepixels.data.audit.jpeg_quality import jpeg_quality
from trustthepixels.data.audit.settings import AuditSettings
from trustthepixels.data.ingest.fingerprint import FileRecord
from trustthepixels.data.ingest.scan import LABELS, scan_dataset
from trustthepixels.data.loading.settings import DataSettings, NearDuplicates

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
    root: Path | str, out_dir: Path | str, data: Mapping[str, Any] | None = None, **settings: Any
) -> dict[str, Any]:
    """Audit `root` into `out_dir`. `data`: the data group's settings as training has them (min_image_side: the
    audit counts the images training would use; near_duplicates, null for exact copies only; cache_dir);
    `settings`: audit_data's own (`AuditSettings`: cheat_threshold, folds, seed). Those left out take their
    defaults."""
    d = validated(DataSettings, {"root": root, **(data or {})}, "data.")
    s = validated(AuditSettings, settings, "")
    near = d.near_duplicates or NearDuplicates(phash=0, dhash=0)
    max_phash, max_dhash, cheat_threshold = near.phash, near.dhash, s.cheat_threshold
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scan = scan_dataset(root, min_side=d.min_image_side, cache_dir=d.cache_dir)
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
    baseline = metadata_baseline(x, y, s.folds, s.seed)
    spectral = spectral_baseline([scan.root / r.relpath for r in usable], y, s.folds, s.seed)

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
    own = {name: cfg[name] for name in ("cheat_threshold", "folds", "seed")}
    return audit_dataset(cfg.data.root, cfg.paths.output_dir, to_plain(cfg.data), **own)
