"""`predict.py`: P(AI) for new images: one file, a folder (recursively) or several paths."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig
from rich.console import Console
from rich.table import Table

from trustthepixels.config import resolve_device
from trustthepixels.data.loading.workers import resolve_num_workers
from trustthepixels.detector.checkpoint import load_detector
from trustthepixels.detector.predictions import Prediction, Threshold, write_predictions
from trustthepixels.errors import UserError
from trustthepixels.metrics.conformal import UNCERTAIN, UNFAMILIAR
from trustthepixels.metrics.core import sigmoid

log = logging.getLogger(__name__)


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[tuple[str, str, Path]], list[tuple[str, str]]]:
    """Every file named, or found below a named folder (sorted), as (source, path inside it, file): a folder is
    its files' source, a single file's folder is its own; and the inputs that do not exist."""
    files, missing = [], []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            source = path.resolve().name
            files += [(source, p.relative_to(path).as_posix(), p) for p in sorted(path.rglob("*")) if p.is_file()]
        elif path.is_file():
            files.append((path.resolve().parent.name, path.name, path))
        else:
            missing.append((str(item), "no such file or folder"))
    return files, missing


def predict(cfg: DictConfig) -> int:
    """Score the inputs, print a table, write the CSV (and Grad-CAM overlays). Returns how many were scored."""
    detector = load_detector(cfg.ckpt_path)
    device, num_workers = resolve_device(cfg.device), resolve_num_workers(cfg.num_workers)
    threshold = detector.decision(cfg.threshold, cfg.get("abstain"))
    inputs = list(cfg.input) if isinstance(cfg.input, ListConfig | list | tuple) else [cfg.input]
    files, missing = collect_inputs(inputs)
    if not files:
        raise UserError(f"input={inputs}: no file found ({', '.join(m for m, _ in missing) or 'empty folders'})")
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The training run's preprocessing and its rule for a usable image (data.min_image_side), nothing else.
    progress = f"Scoring {len(files)} images" if len(files) > cfg.batch_size else None
    scores = detector.score_files([f for *_, f in files], cfg.batch_size, num_workers, device, description=progress)
    logits, errors, familiarity = scores.logits, scores.errors, scores.familiarity
    rows = [
        Prediction(
            source,
            relpath,
            float(logits[i]),
            threshold.value,
            error=errors[i].reason if i in errors else "",
            decided="" if i in errors else threshold.verdict(float(sigmoid(logits[i])), float(familiarity[i])),
            familiarity=float(familiarity[i]),
        )
        for i, (source, relpath, _) in enumerate(files)
    ]
    rows += [Prediction("", given, math.nan, threshold.value, error=reason) for given, reason in missing]
    csv_path = Path(cfg.output) if cfg.output else out_dir / "predictions.csv"
    write_predictions(csv_path, rows)

    scored = [r for r in rows if r.scored]
    failed = [r for r in rows if not r.scored]
    _print_table(scored, failed, threshold, cfg.show)
    log.info(
        "%d scored (%d AI, %d Real, %d uncertain, %d unfamiliar) at threshold %.4f (%s), %d unreadable; predictions "
        "in %s",
        len(scored),
        sum(r.verdict == "AI" for r in scored),
        sum(r.verdict == "Real" for r in scored),
        sum(r.verdict == UNCERTAIN for r in scored),
        sum(r.verdict == UNFAMILIAR for r in scored),
        threshold.value,
        threshold.origin,
        len(failed),
        csv_path,
    )
    if cfg.explain and scored:
        from trustthepixels.prediction.explain import GradCamExplainer

        explainer = GradCamExplainer(detector.model)
        (out_dir / "gradcam").mkdir(exist_ok=True)
        for i, (_, _, path) in enumerate(files):
            if i not in errors:
                explainer.overlay(detector.preprocess(path)[0], out_dir / "gradcam" / f"{i:05d}_{path.stem}.png")
        log.info("Grad-CAM overlays in %s", out_dir / "gradcam")
    return len(scored)


def _print_table(scored: list[Prediction], failed: list[Prediction], threshold: Threshold, show: int) -> None:
    console = Console()
    title = f"P(AI): AI when above {threshold.value:.3f}, {threshold.origin}"
    if threshold.sets is not None:
        title = (
            f"P(AI): a verdict where the calibrated prediction sets (alpha {threshold.sets.alpha:g}) hold one "
            "label, 'uncertain' where the detector cannot tell"
        )
    if threshold.familiar_min is not None:
        title += "; 'unfamiliar' where the image is unlike the images it learned from"
    table = Table(title=title)
    table.add_column("path", overflow="fold")  # wrapped, never cut: the file name is the point
    table.add_column("P(AI)", justify="right")
    table.add_column("familiarity", justify="right")
    table.add_column("verdict")
    for row in scored[:show]:
        familiar = "" if math.isnan(row.familiarity) else f"{row.familiarity:.2f}"
        table.add_row(f"{row.source}/{row.path}" if row.source else row.path, f"{row.p_ai:.4f}", familiar, row.verdict)
    if len(scored) > show:
        table.caption = f"{len(scored) - show} more rows in the CSV"
    console.print(table)
    if failed:
        errors = Table(title="Unreadable", style="red")
        errors.add_column("path", overflow="fold")
        errors.add_column("reason", overflow="fold")
        for row in failed:
            errors.add_row(f"{row.source}/{row.path}" if row.source else row.path, row.error)
        console.print(errors)
