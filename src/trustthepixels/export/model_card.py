"""`export.py format=hf`: a folder the Hugging Face hub and timm understand, with a model card that says what the
detector was trained on, how well it does with what uncertainty, when it declines to answer, and what it must not be
used for.

    FOLDER/config.json, model.safetensors   timm.create_model("local-dir:FOLDER", pretrained=True) loads them
    FOLDER/detector.onnx (+ .json)          the same detector with its verdict rule (export.py's ONNX)
    FOLDER/README.md                        the model card

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
from trustthepixels.tables import markdown_table, with_interval

log = logging.getLogger(__name__)
ABSTENTION_RATES = tuple(m.key for m in ABSTENTION if m.summary)
MUST_NOT = (
    "as the only evidence that an image is or is not AI-generated, in any decision about a person (moderation, "
    "hiring, journalism, courts): its errors are measured above, and they are not rare",
    "on images unlike its training data without checking the `unfamiliar` verdicts: out of its training sources its "
    "accuracy is near chance (see the cross-source table when there is one), and it says so only through them",
    "to certify that an image is authentic: a `Real` verdict means it found no trace it learned, nothing more",
    "against images altered on purpose to evade it: it was not trained or tested against adversaries",
)


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


def _metrics_table(detector: Detector, report: dict[str, Any]) -> list[str]:
    val = report.get("val") or detector.val_metrics
    test = report.get("test") or {}
    rows = []
    for name in SUMMARY:
        cells = [with_interval(numbers, f"{stage}/{name}") for stage, numbers in (("val", val), ("test", test))]
        if cells != ["-", "-"]:
            rows.append([name, *cells])
    lines = markdown_table(["metric", "validation", "test"], rows)
    images = report.get("data", {}).get("images", {})
    if images:
        lines += ["", f"Images: {images.get('val', '?')} validation, {images.get('test', '?')} test."]
    return lines


def _abstention(detector: Detector, rule: Threshold) -> list[str]:
    lines = [
        f"- Calibrated on {where_fitted(detector.calibration)}: its verdicts keep their promises on images like those.",
        f"- Threshold: AI when P(AI) > {rule.value:.4f} ({rule.origin}).",
    ]
    if rule.sets is not None:
        lines.append(
            f"- `uncertain`: class-conditional split conformal prediction sets at alpha {rule.sets.alpha:g}, fitted "
            f"on {rule.sets.n_ai} + {rule.sets.n_real} calibration images (AI + real): on images like those, the true "
            f"label is in the set at least {1 - rule.sets.alpha:.0%} of the time for each class; an image whose set "
            "holds both labels or none gets no verdict."
        )
    if rule.familiar_min is not None and detector.familiarity is not None:
        f = detector.familiarity
        lines.append(
            f"- `unfamiliar`: a Mahalanobis familiarity score on the detector's own features ({f.layers} feature "
            f"blocks, fitted on {f.n_train} training images, cut at {detector.calibration.familiar_quantile:.0%} of "
            f"{len(detector.calibration.reference)} calibration images): an image further from the training images "
            "than nearly every calibration image gets no verdict. The ONNX model returns it as its second output, "
            "`familiarity`."
        )
    path = detector.run_dir / "predictions.csv" if detector.run_dir else None
    if path is not None and path.is_file():
        rows = labelled(read_predictions(path))
        if rows and all(r.decided for r in rows):
            rates = abstention_rates(np.array([r.label for r in rows]), np.array([r.decided for r in rows]))
            shown = {k: with_interval(rates, k) for k in ABSTENTION_RATES}
            lines += [
                "",
                f"On its test split ({rates['images']} images), 95% intervals:",
                "",
                f"- coverage (share given a verdict): {shown['coverage']}",
                f"- accuracy on answered images: {shown['accuracy_answered'] if rates['answered'] else 'none'}",
                f"- confident errors (share given a wrong verdict): {shown['confident_errors']}",
                f"- unfamiliar: {rates['unfamiliar']:.3f} of them",
            ]
    return lines


def _benchmark(detector: Detector) -> list[str]:
    """The cross-source cells of the benchmark row the checkpoint came from, and the whole matrix."""
    row_file = detector.run_dir / "benchmark_row.json" if detector.run_dir else None
    if row_file is None or not row_file.is_file():
        return []
    row = json.loads(row_file.read_text())
    lines = [
        "## Across sources",
        "",
        f"Trained on `{row['train_on']}` by `benchmark.py`; every source's test split:",
        "",
    ]
    rows = []
    for name, c in row["cells"].items():
        where = " (in-source)" if c["in_source"] else ""
        optional = [f"{c[k]:.2f}" if k in c else "-" for k in ("coverage", "confident_errors", "familiarity_auroc")]
        rows.append([f"{name}{where}", c["images"], with_interval(c, "auroc"), *optional])
    header = ["tested on", "images", "AUROC [95%]", "coverage", "confident errors", "familiarity AUROC"]
    lines += markdown_table(header, rows)
    matrix = detector.run_dir.parent / "matrix.md"
    if matrix.is_file():
        lines += ["", "The whole matrix of that benchmark:", "", *matrix.read_text().splitlines()[2:]]
    return [*lines, ""]


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
    """The card's YAML header, written by huggingface_hub's ModelCardData: what the hub indexes (licence, base
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
    return f"---\n{data.to_yaml()}\n---"


def _procedure(report: dict[str, Any], detector: Detector) -> list[str]:
    config = report.get("config", {})
    images = report.get("data", {}).get("images", {})
    if not config:
        return ["Not known: the checkpoint's run folder (its `metrics.json`) was not beside it."]
    start = {"hub": "pretrained weights from the hub", "none": "random initialisation"}.get(
        str(config.get("weights")), f"the weights in `{Path(str(config.get('weights'))).name}`"
    )
    return [
        f"- Fine-tuned from {start}, binary cross-entropy on one logit.",
        f"- {report.get('epochs_completed', '?')} epochs of at most {config.get('max_epochs', '?')}, learning rate "
        f"{config.get('lr')}, weight decay {config.get('weight_decay')}, batch {config.get('batch_size')}, precision "
        f"{config.get('precision')}, seed {config.get('seed')}, images {config.get('image_size')} px.",
        f"- Images per part: {images.get('train', '?')} train, {images.get('val', '?')} validation (chose the "
        f"checkpoint), {images.get('calibration', 0)} calibration (fitted the verdict rule), {images.get('test', '?')}"
        " test (reported below, touched by nothing else).",
        f"- Command: `python train.py {config.get('overrides', '')}`".rstrip() + " (TrustThePixels).",
    ]


def use_snippet(pre: Preprocessing) -> list[str]:
    """Python that scores a PIL `image` with the exported weights as the detector does: timm's eval transform, or,
    for a detector trained on native pixels (data.resize=none), a centre crop that never resizes."""
    transform = "timm.data.create_transform(**config)"
    if not pre.resize:
        transform = (
            "T.Compose([T.PILToTensor(), T.CenterCrop(config['input_size'][1:]), "
            "T.ToDtype(torch.float32, scale=True), T.Normalize(config['mean'], config['std'])])"
        )
    return [
        "import timm, torch" + ("" if pre.resize else "\nfrom torchvision.transforms import v2 as T"),
        'model = timm.create_model("local-dir:FOLDER", pretrained=True).eval()  # or "hf-hub:USER/NAME"',
        "config = timm.data.resolve_data_config({}, model=model)",
        f"transform = {transform}" + ("" if pre.resize else "  # native pixels: crop, never resize"),
        "p_ai = torch.sigmoid(model(transform(image)[None])).item()",
    ]


def model_card(detector: Detector, rule: Threshold) -> str:
    report = _run_report(detector)
    backbone = str(detector.model.hparams.backbone)
    config = detector.data_config
    per_source = report.get("data", {}).get("images_per_source", {}).get("train", {})
    sources = detector.data_roots or {}
    trained = ", ".join(f"`{name}` ({per_source.get(name, '?')} training images)" for name in sources) or "unknown"
    warning = detector.weakness()
    lines = [
        front_matter(detector, report, rule),
        f"# AI-generated image detector: {backbone}",
        "",
        "A binary classifier trained with TrustThePixels (`train.py`, or `benchmark.py` for the cross-source "
        "matrix): one logit per image, P(AI) = sigmoid(logit); label 1 is AI-generated, 0 is real. `config.json` "
        "names that one output `AI` (`label_names`); its `trustthepixels` entry spells out both labels.",
        "",
        *([f"> **Warning.** {warning}", ""] if warning else []),
        "## Intended use",
        "",
        "A screening signal for images like its training data, for researchers and trust-and-safety teams who check "
        "its `uncertain` and `unfamiliar` verdicts and measure it on their own images first "
        "(`python calibrate.py ckpt_path=... data.root=FOLDER` in TrustThePixels). Not a verdict on a person.",
        "",
        "## Use",
        "",
        "```python",
        *use_snippet(Preprocessing.from_data_config(detector.data_config)),
        "```",
        "",
        "`detector.onnx` takes uint8 RGB images (N, 3, H, W) after the resize and crop below, normalises them inside, "
        "and returns `p_ai` and, where the detector has one, `familiarity`; its metadata holds the verdict rule.",
        "",
        "## Training data",
        "",
        f"Sources: {trained}. Each source is split per class into train, validation, calibration and test "
        "(near-duplicate groups kept within one split).",
        "",
        "## Training procedure",
        "",
        *_procedure(report, detector),
        "",
        "## Preprocessing",
        "",
        f"RGB; {Preprocessing.from_data_config(config).describe()}; normalise with mean {list(config['mean'])} and "
        f"std {list(config['std'])}. Images smaller than {detector.min_image_side} px on a side are refused.",
        "",
        "## Evaluation: metrics (95% intervals)",
        "",
        *_metrics_table(detector, report),
        "",
        "## Verdict rule, and when it gives none",
        "",
        *_abstention(detector, rule),
        "",
        *_benchmark(detector),
        "## Limitations: must not be used",
        "",
        *(f"- {item}." for item in MUST_NOT),
        "",
        "Licence: the code that trained it is MIT; the terms of its training images and of its base weights "
        "apply to the weights too.",
        "",
    ]
    return "\n".join(lines)
