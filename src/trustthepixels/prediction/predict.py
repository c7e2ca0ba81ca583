"""`predict.py`: P(AI) for new images: one file, a folder (recursively) or several paths."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, ListConfig
from rich.console import Console
from rich.table import Table

from trustthepixels.data.loading.datamodule import default_num_workers
from trustthepixels.evaluation.inference import InferenceDataset, predict_logits
from trustthepixels.evaluation.metrics import sigmoid
from trustthepixels.model.checkpoint import load_detector, resolve_device

log = logging.getLogger(__name__)


def collect_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every file named or found below a named folder (sorted), and the paths that do not exist."""
    files, missing = [], []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            missing.append((path, "no such file or folder"))
    return files, missing


def predict(cfg: DictConfig) -> int:
    """Score the inputs, print a table, write the CSV (and Grad-CAM overlays). Returns how many were scored."""
    detector = load_detector(cfg.ckpt_path)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = list(cfg.input) if isinstance(cfg.input, ListConfig | list | tuple) else [cfg.input]
    files, missing = collect_inputs(inputs)
    device = resolve_device(cfg.device)
    model = detector.model.to(device)
    # The training run's preprocessing and its rule for a usable image (data.min_image_side), nothing else.
    dataset = InferenceDataset(files, detector.data_config, detector.min_image_side)
    workers = default_num_workers() if cfg.num_workers is None else cfg.num_workers
    progress = f"Scoring {len(files)} images" if len(files) > cfg.batch_size else None
    logits, errors = predict_logits(model, dataset, cfg.batch_size, workers, progress) if files else ([], {})
    threshold = float(cfg.threshold)

    rows = []
    for i, path in enumerate(files):
        if i in errors:
            rows.append({"path": str(path), "p_ai": "", "label": "", "threshold": threshold, "error": errors[i]})
        else:
            p = float(sigmoid(logits[i]))
            label = detector.labels[int(p > threshold)]
            rows.append({"path": str(path), "p_ai": f"{p:.6f}", "label": label, "threshold": threshold, "error": ""})
    rows += [{"path": str(p), "p_ai": "", "label": "", "threshold": threshold, "error": e} for p, e in missing]
    csv_path = Path(cfg.output) if cfg.output else out_dir / "predictions.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "p_ai", "label", "threshold", "error"])
        writer.writeheader()
        writer.writerows(rows)

    scored = [r for r in rows if not r["error"]]
    failed = [r for r in rows if r["error"]]
    _print_table(scored, failed, threshold, cfg.show)
    log.info(
        "%d scored (%d AI), %d unreadable; predictions in %s",
        len(scored),
        sum(r["label"] == detector.labels[1] for r in scored),
        len(failed),
        csv_path,
    )
    if cfg.explain and scored:
        from trustthepixels.prediction.explain import GradCamExplainer

        explainer = GradCamExplainer(model)
        (out_dir / "gradcam").mkdir(exist_ok=True)
        for i, path in enumerate(files):
            if i not in errors:
                explainer.overlay(dataset[i][0], out_dir / "gradcam" / f"{i:05d}_{path.stem}.png")
        log.info("Grad-CAM overlays in %s", out_dir / "gradcam")
    return len(scored)


def _print_table(scored: list[dict], failed: list[dict], threshold: float, show: int) -> None:
    console = Console()
    table = Table(title=f"P(AI) (AI when above {threshold:.3f})")
    table.add_column("path", overflow="fold")  # wrapped, never cut: the file name is the point
    table.add_column("P(AI)", justify="right")
    table.add_column("label")
    for row in scored[:show]:
        table.add_row(row["path"], row["p_ai"][:6], row["label"])
    if len(scored) > show:
        table.caption = f"{len(scored) - show} more rows in the CSV"
    console.print(table)
    if failed:
        errors = Table(title="Unreadable", style="red")
        errors.add_column("path", overflow="fold")
        errors.add_column("reason", overflow="fold")
        for row in failed:
            errors.add_row(row["path"], row["error"])
        console.print(errors)
