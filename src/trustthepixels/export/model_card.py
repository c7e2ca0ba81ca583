"""`export.py format=hf`: a folder the Hugging Face hub and timm understand, with a model card that says what the
detector was trained on, how well it does with what uncertainty, when it declines to answer, and what it must not be
used for.

    FOLDER/config.json, model.safetensors   timm.create_model("local-dir:FOLDER", pretrained=True) loads them
    FOLDER/detector.onnx (+ .json)          the same detector with its verdict rule (export.py's ONNX)
    FOLDER/README.md                        the model card: model_card.md (a Jinja template) filled in

Uploading is one command (`hf upload USER/NAME FOLDER`), not run here: the card and files are what is tested.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, open_dict

from trustthepixels.data.ingest.published import HF_DATASET
from trustthepixels.data.loading.transforms import Preprocessing
from trustthepixels.detector.checkpoint import Detector, load_detector
from trustthepixels.detector.predictions import Threshold, labelled, read_predictions, where_fitted
from trustthepixels.metric_registry import ABSTENTION, SUMMARY
from trustthepixels.metrics.selective import abstention_rates
from trustthepixels.tables import markdown_table, render, with_interval

log = logging.getLogger(__name__)
ABSTENTION_RATES = tuple(m.key for m in ABSTENTION if m.summary)
TEMPLATE = Path(__file__).with_name("model_card.md")  # the card's text, a Jinja template


def export_hf(cfg: DictConfig, export_onnx) -> dict[str, Any]:
    """Write the folder: timm's config and weights, the ONNX model, the card. Returns what was written."""
    from timm.models import save_for_hf

    detector = load_detector(cfg.ckpt_path)
    folder = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / "hf"
    folder.mkdir(parents=True, exist_ok=True)
    backbone = copy.deepcopy(detector.model.backbone).to(memory_format=torch.contiguous_format)  # safetensors
    provenance = {"tag": "trustthepixels", "license": LICENSE, "origin_url": "", "paper_ids": ""}  # not timm's weights
    # One logit, P(AI) = sigmoid(logit): the hub's label list names that one output (label_names[0] = "AI"); the
    # two classes and the rule are spelled out beside it.
    head = {
        "output": "one logit per image; P(AI) = sigmoid(logit), P(Real) = 1 - P(AI)",
        "labels": {str(k): v for k, v in detector.labels.items()},
    }
    save_for_hf(
        backbone,
        folder,
        model_config={"label_names": [detector.labels[1]], "pretrained_cfg": provenance, "trustthepixels": head},
        safe_serialization=True,
        data_config=dict(detector.data_config),
    )
    onnx_cfg = copy.deepcopy(cfg)
    with open_dict(onnx_cfg):
        onnx_cfg.output = str(folder / "detector.onnx")
    onnx_report = export_onnx(onnx_cfg, detector)
    rule = detector.decision(cfg.threshold, cfg.get("abstain"))
    (folder / "README.md").write_text(model_card(detector, rule))
    log.info("Hugging Face folder in %s: upload it with `hf upload USER/NAME %s`", folder, folder)
    return {"folder": str(folder), "files": sorted(p.name for p in folder.iterdir()), "onnx": onnx_report}


LICENSE = "mit"  # the project's; the training images' and base weights' own terms also apply (the card says so)


def _run_report(detector: Detector) -> dict[str, Any]:
    path = detector.run_dir / "metrics.json" if detector.run_dir else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else {}


def _metrics_table(detector: Detector, report: dict[str, Any]) -> str:
    val = report.get("val") or detector.val_metrics
    test = report.get("test") or {}
    rows = []
    for name in SUMMARY:
        cells = [with_interval(numbers, f"{stage}/{name}") for stage, numbers in (("val", val), ("test", test))]
        if cells != ["-", "-"]:
            rows.append([name, *cells])
    return "\n".join(markdown_table(["metric", "validation", "test"], rows))


def _test_rates(detector: Detector) -> dict[str, Any] | None:
    """Coverage, accuracy on answered images and confident errors of its verdicts on its test split (its run's
    predictions.csv), with their intervals, as text."""
    path = detector.run_dir / "predictions.csv" if detector.run_dir else None
    rows = labelled(read_predictions(path)) if path is not None and path.is_file() else []
    if not rows or not all(r.decided for r in rows):
        return None
    rates = abstention_rates(np.array([r.label for r in rows]), np.array([r.decided for r in rows]))
    shown = {k: with_interval(rates, k) for k in ABSTENTION_RATES}
    if not rates["answered"]:
        shown["accuracy_answered"] = "none"
    return shown | {"images": rates["images"], "unfamiliar": f"{rates['unfamiliar']:.3f}"}


def _benchmark_row(detector: Detector) -> dict[str, Any] | None:
    """The cross-source cells of the benchmark row the checkpoint came from, and the whole matrix, as tables."""
    row_file = detector.run_dir / "benchmark_row.json" if detector.run_dir else None
    if row_file is None or not row_file.is_file():
        return None
    row = json.loads(row_file.read_text())
    rows = []
    for name, c in row["cells"].items():
        where = " (in-source)" if c["in_source"] else ""
        optional = [f"{c[k]:.2f}" if k in c else "-" for k in ("coverage", "confident_errors", "familiarity_auroc")]
        rows.append([f"{name}{where}", c["images"], with_interval(c, "auroc"), *optional])
    header = ["tested on", "images", "AUROC [95%]", "coverage", "confident errors", "familiarity AUROC"]
    matrix = detector.run_dir.parent / "matrix.md"
    return {
        "train_on": row["train_on"],
        "table": "\n".join(markdown_table(header, rows)),
        "matrix": "\n".join(matrix.read_text().splitlines()[2:]) if matrix.is_file() else "",
    }


def base_model(report: dict[str, Any], backbone: str) -> str | None:
    """The hub id of the weights training started from (timm's pretrained config), None when from scratch."""
    import timm

    weights = str(report.get("config", {}).get("weights", "none"))
    if weights == "none":
        return None
    name = backbone if weights == "hub" else Path(weights).name.removesuffix(".safetensors").removesuffix(".pth")
    try:
        return timm.models.get_pretrained_cfg(name).hf_hub_id or None
    except (RuntimeError, AttributeError, KeyError):  # not one of timm's pretrained tags
        return None


def datasets(detector: Detector) -> list[str]:
    """The training sources: the hub dataset a folder was reduced from (its provenance.json), else its name."""
    names = []
    for name, folder in (detector.data_roots or {}).items():
        provenance = Path(folder) / "provenance.json"
        info = json.loads(provenance.read_text()) if provenance.is_file() else {}
        names.append(info.get("dataset") or (HF_DATASET if info else name))
    return names


def front_matter(detector: Detector, report: dict[str, Any], rule: Threshold) -> str:
    """The card's YAML front matter, written by huggingface_hub's ModelCardData: what the hub indexes (licence, base
    model, datasets, task) and `model-index`, the test metrics as the hub's evaluation results."""
    from huggingface_hub import EvalResult, ModelCardData

    test = report.get("test") or {}
    names = datasets(detector)
    where = {
        "task_type": "image-classification",
        "task_name": "AI-generated image detection",
        "dataset_type": (names or ["unknown"])[0],
        "dataset_name": f"{', '.join(detector.data_roots or {}) or 'its training sources'}: test split",
        "dataset_split": "test",
    }
    results = [
        EvalResult(**where, metric_type=kind, metric_name=name, metric_value=round(float(test[key]), 4))
        for key, kind, name in (
            ("test/auroc", "roc_auc", "AUROC"),
            ("test/ap", "average_precision", "average precision"),
            ("test/acc_at_threshold", "accuracy", f"accuracy at threshold {rule.value:.3f}"),
            ("test/balanced_acc_at_threshold", "balanced_accuracy", "balanced accuracy at the threshold"),
        )
        if key in test
    ]
    backbone = str(detector.model.hparams.backbone)
    data = ModelCardData(
        library_name="timm",
        license=LICENSE,
        pipeline_tag="image-classification",
        tags=["image-classification", "ai-generated-image-detection", "trustthepixels", "timm"],
        base_model=base_model(report, backbone),
        datasets=names,
        model_name=f"trustthepixels-{backbone}",
        eval_results=results or None,
    )
    return data.to_yaml()


def model_card(detector: Detector, rule: Threshold) -> str:
    """The card: `model_card.md` filled in from the detector, its run's metrics.json and predictions, and the
    benchmark row it came from."""
    report = _run_report(detector)
    config = report.get("config", {})
    per_source = report.get("data", {}).get("images_per_source", {}).get("train", {})
    sources = detector.data_roots or {}
    weights = str(config.get("weights"))
    familiarity = None  # the familiarity score behind `unfamiliar` verdicts, when the rule gives them
    if rule.familiar_min is not None and detector.familiarity is not None:
        f, record = detector.familiarity, detector.calibration
        familiarity = {"layers": f.layers, "n_train": f.n_train, "quantile": record.familiar_quantile}
        familiarity["reference"] = len(record.reference)
    return render(
        TEMPLATE,
        card_data=front_matter(detector, report, rule),
        backbone=str(detector.model.hparams.backbone),
        warning=detector.weakness(),
        pre=Preprocessing.from_data_config(detector.data_config),
        trained=", ".join(f"`{n}` ({per_source.get(n, '?')} training images)" for n in sources) or "unknown",
        report=report,
        config=config,
        images=report.get("data", {}).get("images", {}),
        start={"hub": "pretrained weights from the hub", "none": "random initialisation"}.get(
            weights, f"the weights in `{Path(weights).name}`"
        ),
        mean=list(detector.data_config["mean"]),
        std=list(detector.data_config["std"]),
        min_side=detector.min_image_side,
        metrics_table=_metrics_table(detector, report),
        calibrated_on=where_fitted(detector.calibration),
        rule=rule,
        familiarity=familiarity,
        rates=_test_rates(detector),
        row=_benchmark_row(detector),
    )
