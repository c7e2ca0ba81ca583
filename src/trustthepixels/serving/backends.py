"""What the server runs: a PyTorch checkpoint or the ONNX model from `export.py`, behind one interface.

Both see an upload exactly as `predict.py` sees a file (`InferenceDataset`: the project's one "usable image" rule,
the training run's decoding, resize and crop), and both return P(AI) for a batch of uint8 images, so the two
backends give the same scores (the export itself is checked against PyTorch to 1e-4).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustthepixels.config import resolve_device
from trustthepixels.data.ingest.decode import ImageDecodeError
from trustthepixels.data.loading.transforms import image_size
from trustthepixels.detector.checkpoint import load_detector
from trustthepixels.detector.predictions import Threshold, verdict_rule
from trustthepixels.detector.scoring import InferenceDataset
from trustthepixels.errors import ConfigError
from trustthepixels.metrics.calibration import Calibration
from trustthepixels.metrics.core import sigmoid

log = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    """`GET /v1/model`: what is answering, and how far its validation numbers go."""

    backend: str
    backbone: str
    rule: Threshold  # the verdict rule: threshold and its origin, prediction sets and familiarity cutoff
    labels: dict[int, str]
    data_config: dict[str, Any]
    min_image_side: int
    trained_on: Any
    val_metrics: dict[str, float] = field(default_factory=dict)
    source: str = ""
    explain: bool = False
    warning: str = ""  # when the model itself is weak (Detector.weakness)

    def public(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "backbone": self.backbone,
            "input_size": image_size(self.data_config),
            "threshold": self.rule.value,
            "threshold_source": self.rule.origin,
            "abstain": self.rule.sets.state() if self.rule.sets is not None else None,
            "familiar_min": self.rule.familiar_min,
            "labels": {str(k): v for k, v in self.labels.items()},
            "preprocessing": self.data_config,
            "min_image_side": self.min_image_side,
            "trained_on": sorted(self.trained_on) if isinstance(self.trained_on, dict) else self.trained_on,
            "val_metrics": self.val_metrics,
            "model_file": Path(self.source).name,  # no server path in any response
            "explain": self.explain,
            "warning": self.warning or None,
        }


class Backend:
    info: ModelInfo

    def preprocess(self, path: Path) -> tuple[torch.Tensor | None, ImageDecodeError | None]:
        """The model input for one uploaded file (uint8 CHW), or None and why it cannot be used."""
        tensor, _, error = InferenceDataset([path], self.info.data_config, self.info.min_image_side)[0]
        return tensor, error

    def score(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, H, W) uint8 -> P(AI) and familiarity, (N,) float64 each (familiarity NaN without a score)."""
        raise NotImplementedError

    def heatmap_png(self, image: torch.Tensor) -> bytes:
        raise NotImplementedError


class TorchBackend(Backend):
    def __init__(
        self, ckpt_path: str | Path, device: str = "auto", threshold: float | None = None, abstain: Any = None
    ):
        detector = load_detector(ckpt_path)
        self.device = resolve_device(device)
        self.model = detector.model.to(self.device).eval()
        self.familiarity = detector.familiarity.to(self.device) if detector.familiarity is not None else None
        self._explainer = None
        decision = detector.decision(threshold, abstain)
        self.info = ModelInfo(
            backend="torch",
            backbone=str(detector.model.hparams.backbone),
            rule=decision,
            labels=detector.labels,
            data_config=detector.data_config,
            min_image_side=detector.min_image_side,
            trained_on={k: str(v) for k, v in (detector.data_roots or {}).items()},
            val_metrics=detector.val_metrics,
            source=str(detector.checkpoint),
            explain=bool(getattr(detector.model.backbone, "feature_info", None)),
            warning=detector.weakness(),
        )

    @torch.inference_mode()
    def score(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        images = images.to(self.device)
        if self.familiarity is None:
            return sigmoid(self.model(images).float().cpu().numpy()), np.full(len(images), np.nan)
        logits, features = self.model.forward_with_features(images)
        familiarity = self.familiarity(features).cpu().numpy().astype(np.float64)
        return sigmoid(logits.float().cpu().numpy()), familiarity

    def heatmap_png(self, image: torch.Tensor) -> bytes:
        """Grad-CAM overlay on the model's view of the image. A copy of the model carries Grad-CAM's hooks, so
        batched inference never runs through them."""
        from trustthepixels.prediction.explain import GradCamExplainer

        if self._explainer is None:
            self._explainer = GradCamExplainer(copy.deepcopy(self.model).cpu())
        buffer = io.BytesIO()
        self._explainer.overlay_image(image).save(buffer, format="PNG")
        return buffer.getvalue()


class OnnxBackend(Backend):
    """The exported graph (normalisation and sigmoid inside) in onnxruntime; its metadata carries the rest."""

    def __init__(
        self, onnx_path: str | Path, threshold: float | None = None, threads: int | None = None, abstain: Any = None
    ):
        import onnxruntime

        path = Path(onnx_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"onnx_path={path} is not a file: export one with python export.py ckpt_path=...")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs() if o.name in ("p_ai", "familiarity")]
        meta = self.session.get_modelmeta().custom_metadata_map
        if "data_config" not in meta:
            raise ConfigError(f"{path} has no preprocessing metadata: re-export it with this version's export.py")
        data_config = json.loads(meta["data_config"])
        if "calibration" not in meta:
            raise ConfigError(f"{path} has no calibration record: re-export it with this version's export.py")
        record = Calibration.from_state(json.loads(meta["calibration"]))
        exported_abstaining = json.loads(meta.get("abstain", "true"))
        decision = verdict_rule(record, threshold, abstain if exported_abstaining else False)
        if "familiarity" not in self.outputs:  # a graph without the familiarity output cannot flag unfamiliar images
            decision = dataclasses.replace(decision, familiar_min=None)
        if threshold is None and "threshold_source" in meta:  # what export.py decided (threshold= there included)
            decision = dataclasses.replace(decision, value=float(meta["threshold"]), origin=meta["threshold_source"])
        self.info = ModelInfo(
            backend="onnx",
            backbone=meta.get("backbone", "unknown"),
            rule=decision,
            labels={int(k): v for k, v in json.loads(meta.get("labels", '{"0": "Real", "1": "AI"}')).items()},
            data_config=data_config,
            min_image_side=int(meta.get("min_image_side", 8)),
            trained_on=json.loads(meta.get("trained_on", "{}")),
            val_metrics=json.loads(meta.get("val_metrics", "{}")),
            source=str(path),
            explain=False,
            warning=meta.get("warning", ""),
        )

    def score(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        outputs = self.session.run(self.outputs, {"images": images.numpy()})
        p_ai = outputs[0].astype(np.float64).reshape(-1)
        familiarity = outputs[1].astype(np.float64).reshape(-1) if len(outputs) > 1 else np.full(len(p_ai), np.nan)
        return p_ai, familiarity


def load_backend(cfg) -> Backend:
    """serve.backend=torch (ckpt_path) or onnx (onnx_path)."""
    threshold = None if cfg.threshold is None else float(cfg.threshold)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    if cfg.backend == "torch":
        if not cfg.ckpt_path:
            raise ConfigError("backend=torch needs ckpt_path=<run dir>/checkpoints/<best>.ckpt")
        return TorchBackend(cfg.ckpt_path, cfg.device, threshold, cfg.get("abstain"))
    if cfg.backend == "onnx":
        if not cfg.onnx_path:
            raise ConfigError("backend=onnx needs onnx_path=FILE.onnx (from python export.py ckpt_path=...)")
        return OnnxBackend(cfg.onnx_path, threshold, cfg.get("threads"), cfg.get("abstain"))
    raise ConfigError(f"backend={cfg.backend!r}: use torch (a checkpoint) or onnx (an exported model)")
