"""`export.py`: the detector as an ONNX model that takes uint8 images and returns P(AI) (and familiarity).

Normalisation and the sigmoid are inside the graph; the resize and crop that come before it, the threshold
and the label names are in the model's metadata. The export is checked against PyTorch with onnxruntime.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from trustthepixels.data.ingest.scan import scan_dataset
from trustthepixels.data.loading.split import read_split_csv
from trustthepixels.data.loading.transforms import Preprocessing, image_size
from trustthepixels.detector.checkpoint import Detector, load_detector
from trustthepixels.detector.predictions import Threshold
from trustthepixels.detector.scoring import InferenceDataset
from trustthepixels.errors import UserError

log = logging.getLogger(__name__)


class ProbabilityOfAI(torch.nn.Module):
    """uint8 images to P(AI), and, when the detector has one, the familiarity score from the same pass."""

    def __init__(self, model: torch.nn.Module, familiarity: torch.nn.Module | None = None):
        super().__init__()
        self.model = model
        self.familiarity = familiarity

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.familiarity is None:
            return torch.sigmoid(self.model(images))
        logits, features = self.model.forward_with_features(images)
        return torch.sigmoid(logits), self.familiarity(features)


def _metadata(detector: Detector, threshold: Threshold) -> dict[str, str]:
    config = detector.data_config
    familiar = detector.familiarity
    size, pre = image_size(config), Preprocessing.from_data_config(config)
    return {
        "input": f"uint8 RGB, NCHW, {size}x{size}: {pre.describe()}. Normalisation is in the graph.",
        "output": "p_ai: probability that each image is AI-generated"
        + ("; familiarity: share of calibration images at least as far from the training images" if familiar else ""),
        "input_size": str(size),
        "crop_pct": str(pre.crop_pct),
        "interpolation": pre.interpolation,
        # Training decoded JPEGs 2x+ larger than needed with DCT scaling (Pillow's draft()): do the same.
        "jpeg_draft": str(pre.jpeg_draft).lower(),
        "mean": json.dumps(list(config["mean"])),
        "std": json.dumps(list(config["std"])),
        "threshold": str(threshold.value),
        "threshold_source": threshold.origin,
        # The calibration record: serve.py's ONNX backend decides by it (the graph ranks against its reference too).
        "calibration": json.dumps(detector.calibration.state()),
        # Whether the rule in force abstains (abstain.enabled when exported).
        "abstain": json.dumps(threshold.abstains),
        "warning": detector.weakness(),  # empty unless the detector itself is weak
        "labels": json.dumps({str(k): v for k, v in detector.labels.items()}),
        "backbone": str(detector.model.hparams.backbone),
        "checkpoint": detector.checkpoint.name,
        # Everything a server needs to see images as training did, and to describe the model (serve.py).
        "data_config": json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}),
        "min_image_side": str(detector.min_image_side),
        "val_metrics": json.dumps(detector.val_metrics),
        "trained_on": json.dumps({k: str(v) for k, v in (detector.data_roots or {}).items()}),
    }


def _check_images(detector: Detector, check_dir: str | None, limit: int) -> list[Path]:
    """Real images to compare on: a given folder, else the run's own test split."""
    if check_dir:
        scan = scan_dataset(check_dir)
        return [s.path for s in scan.samples][:limit]
    split_csv = detector.run_dir / "split.csv" if detector.run_dir else None
    if split_csv and split_csv.is_file() and detector.data_roots:
        return [detector.locate(p) for p, _ in read_split_csv(split_csv)["test"]][:limit]
    raise UserError("No images to check the export on: pass check_images=FOLDER")


def export(cfg: DictConfig) -> dict[str, Any]:
    """`export.py`: dispatch on `cfg.format` (onnx or hf: ExportSettings checked it)."""
    if cfg.format == "hf":
        from trustthepixels.export.model_card import export_hf

        return export_hf(cfg, export_onnx)
    return export_onnx(cfg)


def export_onnx(cfg: DictConfig, detector: Detector | None = None) -> dict[str, Any]:
    """The ONNX file and its check against PyTorch (`detector`: the checkpoint's, when the caller has loaded it)."""
    import onnx
    import onnxruntime

    if detector is None:
        detector = load_detector(cfg.ckpt_path)
    wrapper = ProbabilityOfAI(detector.model, detector.familiarity).eval()
    outputs = ["p_ai", "familiarity"] if detector.familiarity is not None else ["p_ai"]
    size = image_size(detector.data_config)
    out = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / "detector.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    torch.onnx.export(
        wrapper,
        (example,),
        str(out),
        dynamo=True,
        input_names=["images"],
        output_names=outputs,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
        opset_version=cfg.opset,
        external_data=False,  # one self-contained file: no `detector.onnx.data` beside it
    )
    model = onnx.load(str(out))
    metadata = _metadata(detector, detector.decision(cfg.threshold, cfg.get("abstain")))
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(out))

    paths = _check_images(detector, cfg.check_images, cfg.check_limit)
    dataset = InferenceDataset(paths, detector.data_config, detector.min_image_side)
    items = [dataset[i] for i in range(len(paths))]
    unreadable = [(paths[i], error) for _, i, error in items if error]
    for path, error in unreadable:
        log.warning("Not used to check the export: %s (%s)", path, error)
    if len(unreadable) == len(items):
        raise UserError(
            f"None of the {len(paths)} images to check the export on could be read (first: {unreadable[0][0]}: "
            f"{unreadable[0][1]}): pass check_images=FOLDER with readable images"
        )
    images = torch.stack([tensor for tensor, _, error in items if not error])
    with torch.inference_mode():
        expected = wrapper(images)
    expected = [t.numpy() for t in expected] if isinstance(expected, tuple) else [expected.numpy()]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(outputs, {"images": images.numpy()})
    max_diff = float(np.abs(got[0] - expected[0]).max())
    report = {
        "onnx": str(out),
        "bytes": out.stat().st_size,
        "checked_images": len(images),
        "unreadable_check_images": len(unreadable),
        "max_abs_diff_p_ai": max_diff,
    }
    if detector.familiarity is not None:
        # A rank among the validation images: rounding may move an image past one of them, no further.
        report["max_abs_diff_familiarity"] = float(np.abs(got[1] - expected[1]).max())
        if report["max_abs_diff_familiarity"] > 1.5 / max(1, len(detector.familiarity.reference)):
            raise RuntimeError(f"ONNX and PyTorch disagree on familiarity: {report['max_abs_diff_familiarity']:.3f}")
    (out.with_suffix(".json")).write_text(json.dumps({**report, "metadata": metadata}, indent=2))
    if max_diff > cfg.tolerance:
        raise RuntimeError(
            f"ONNX and PyTorch disagree: max |dP(AI)| = {max_diff:.2e} > {cfg.tolerance} on {len(images)} images"
        )
    log.info(
        "Exported %s (%.1f MB); on %d real images max |dP(AI)| vs PyTorch = %.2e",
        out,
        report["bytes"] / 1e6,
        len(images),
        max_diff,
    )
    return report
