"""`calibrate.py`: how a detector does on the user's own labelled images, and a copy of it calibrated there.

The folder is scored once. Its AUROC, AP and accuracy (with 95% intervals) say whether the detector works there at
all; then the folder is split in two (seeded, per class, near-duplicate groups whole): the calibration record
(metrics/calibration.py) is fitted on one half and checked on the other (coverage, accuracy on answered images and
confident errors per class, exact intervals), beside what the checkpoint's own record does on that half. `fit=all`
refits on every image afterwards. The weights never change: the written checkpoint is the same detector with a
record that names this folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from trustthepixels.config import resolve_device, to_plain
from trustthepixels.data.ingest.fileutils import atomic_write_text
from trustthepixels.data.ingest.roots import parse_roots
from trustthepixels.data.ingest.scan import scan_sources
from trustthepixels.data.loading.planner import calibration_halves
from trustthepixels.data.loading.workers import resolve_num_workers
from trustthepixels.detector.calibrate import LabelledScores, check_record, fit_record, score_labelled
from trustthepixels.detector.checkpoint import load_detector, read_checkpoint, save_checkpoint
from trustthepixels.detector.predictions import where_fitted
from trustthepixels.errors import UserError
from trustthepixels.metrics.calibration import KEY, Calibration
from trustthepixels.metrics.intervals import measured
from trustthepixels.tables import markdown_table, render, with_interval

log = logging.getLogger(__name__)
WORKS, WEAK = 0.8, 0.6  # the AUROC interval's lower end: above WORKS "works here", at most WEAK "does not work here"
LEGACY_KEYS = ("val_threshold", "conformal")  # what a calibration record replaces
TEMPLATE = Path(__file__).with_name("calibration_report.md")  # report.md's text, a Jinja template


def verdict_sentence(auroc: float, low: float, high: float) -> str:
    """The first line of results: whether the detector separates these images at all."""
    figure = f"AUROC {auroc:.2f} [{low:.2f}, {high:.2f}]"
    if low > WORKS:
        return f"works here: {figure}"
    if low > WEAK:
        return f"works weakly here: {figure}: expect many uncertain verdicts"
    return f"does not work here: {figure}: most verdicts will be uncertain"


def calibrate(cfg: DictConfig) -> dict[str, Any]:
    out_dir = Path(cfg.paths.output_dir)
    detector = load_detector(cfg.ckpt_path, calibrated=False)
    device, workers = resolve_device(cfg.device), resolve_num_workers(cfg.data.num_workers)
    abstain = to_plain(cfg.abstain) if cfg.get("abstain") else {}
    familiarity_state = None
    if detector.familiarity is None and abstain.get("familiar_quantile") is not None:
        layers = str(abstain.get("familiarity_layers", "last_stage"))
        familiarity_state = detector.fit_familiarity_on_run(layers, cfg.data.batch_size, workers, device)

    roots = parse_roots(to_plain(cfg.data.root))
    min_side = detector.min_image_side if cfg.data.min_image_side is None else int(cfg.data.min_image_side)
    scan = scan_sources(roots, min_side=min_side, cache_dir=cfg.data.cache_dir)
    if scan.skipped:
        (first, _, reason), count = scan.skipped[0], len(scan.skipped)
        log.warning("%d files of data.root cannot be used and are left out (e.g. %s: %s)", count, first, reason)
    fit, _ = calibration_halves(scan.samples, scan.records, to_plain(cfg.data.near_duplicates), cfg.seed)
    in_fit = {s.path for s in fit}
    labelled = [(s.path, s.label) for s in scan.samples]
    scores = score_labelled(detector, labelled, cfg.data.batch_size, workers, device, f"Scoring {len(labelled)} images")
    if len(set(scores.labels.tolist())) < 2:
        raise UserError(f"data.root={cfg.data.root}: calibrating needs usable images of both classes (AI/ and Real/)")
    fit_half = scores.subset(np.array([p in in_fit for p in scores.paths]))
    check_half = scores.subset(np.array([p not in in_fit for p in scores.paths]))
    sources = list(roots)

    before = detector.calibration
    whole = _separation(scores, before.threshold if before else 0.5, cfg)
    sentence = verdict_sentence(whole["auroc"], whole["auroc_lo"], whole["auroc_hi"])
    record = fit_record(detector, fit_half, abstain, sources, "fitting half", strict=True)
    checks = {"after": check_record(record, detector, check_half)}
    if before is not None:
        checks["before"] = check_record(before, detector, check_half)
    if cfg.fit == "all":
        record = fit_record(detector, scores, abstain, sources, "all images", strict=True)
    record = Calibration.from_state(record.state() | {"checks": {"images": len(check_half.labels), **checks}})

    output = Path(cfg.output) if cfg.output else out_dir / "calibrated.ckpt"
    _write_checkpoint(Path(cfg.ckpt_path), output, record, familiarity_state)
    result = {
        "checkpoint": str(detector.checkpoint),
        "calibrated_checkpoint": str(output),
        "data_root": {name: str(folder) for name, folder in scan.roots.items()},
        "images": {
            "usable": len(scores.labels),
            "unusable": len(scan.skipped) + scores.unusable,
            "fitting_half": len(fit_half.labels),
            "checking_half": len(check_half.labels),
        },
        "verdict": sentence,
        "metrics": whole,
        "before": where_fitted(before) if before else None,
        "checks": checks,
        "calibration": record.summary(),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    report = report_markdown(result)
    atomic_write_text(out_dir / "report.md", report)
    log.info("%s\nWritten: %s and %s", "\n".join(_summary_lines(result)), output, out_dir / "report.md")
    return result


def _separation(scores: LabelledScores, threshold: float, cfg: DictConfig) -> dict[str, float]:
    """AUROC, AP and accuracy (at the checkpoint's threshold) on every usable image, with 95% intervals."""
    m = measured(scores.labels, scores.logits, threshold=threshold, n_resamples=cfg.bootstrap, seed=cfg.seed)
    keys = {"auroc": "auroc", "ap": "ap", "acc": "acc_at_threshold"}
    shown = {f"{name}{end}": m[f"{key}{end}"] for name, key in keys.items() for end in ("", "_lo", "_hi")}
    return shown | {"threshold": threshold, "images": len(scores.labels)}


def _write_checkpoint(source: Path, output: Path, record: Calibration, familiarity: dict | None) -> None:
    """The same checkpoint with this record (and familiarity statistics, when they were fitted here), atomically."""
    checkpoint = {k: v for k, v in read_checkpoint(source).items() if k not in LEGACY_KEYS} | {KEY: record.state()}
    if familiarity is not None:
        checkpoint["familiarity"] = familiarity
    save_checkpoint(checkpoint, output)


def _summary_lines(result: dict[str, Any]) -> list[str]:
    m = result["metrics"]
    lines = [
        f"The detector {result['verdict']}",
        f"AP {with_interval(m, 'ap')}, accuracy {with_interval(m, 'acc')} at its threshold {m['threshold']:.3f}, "
        f"on {m['images']} images",
        "",
        f"Checked on the other half ({result['images']['checking_half']} images), 95% intervals:",
        "",
    ]
    rows = []
    for name, rates in result["checks"].items():
        label = "recalibrated here" if name == "after" else "the checkpoint's own"
        for part in ("AI", "Real", "all"):
            r = rates[part]
            rows.append(
                [label, part, *(with_interval(r, k) for k in ("coverage", "accuracy_answered", "confident_errors"))]
            )
    lines += markdown_table(["record", "class", "coverage", "accuracy on answered", "confident errors"], rows)
    return lines


def report_markdown(result: dict[str, Any]) -> str:
    """report.md: `calibration_report.md` filled in from metrics.json."""
    cal = result["calibration"]
    return render(
        TEMPLATE,
        **{k: result[k] for k in ("checkpoint", "calibrated_checkpoint", "images", "before")},
        roots=", ".join(f"{k}: `{v}`" for k, v in result["data_root"].items()),
        summary="\n".join(_summary_lines(result)),
        alpha=cal["sets"]["alpha"],
        cal=cal,
        cut=_cut,
        familiarity_cutoff=_familiarity_cutoff(cal),
    )


def _familiarity_cutoff(cal: dict[str, Any]) -> str:
    if not cal["reference"] or cal["familiar_quantile"] is None:
        return "none (no familiarity score)"
    return f"unfamiliar beyond the {cal['familiar_quantile']:g} quantile of {cal['reference']} images' distances"


def _cut(value: float | None) -> str:
    return "never" if value is None else f"{value:.4f}"
