"""`predict.py`'s and `export.py`'s settings as structured configs (configs/predict.yaml and export.yaml say what
each does): types checked as the config composes, the rules below before the checkpoint loads; each refusal names
the setting and what it takes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

from trustthepixels.config import CommandSettings, refusal, register_schema, setting
from trustthepixels.detector.settings import THRESHOLD_USE, DetectorCommandSettings, check_detector_command


@dataclass
class PredictSettings(DetectorCommandSettings):
    input: Any = setting("an image, a folder of images, or a list of them")
    output: Optional[str] = setting("a CSV file to write, or null for predictions.csv in the run folder")  # noqa: UP045
    explain: bool = setting("true (a Grad-CAM heatmap per image) or false")
    batch_size: int = setting("a whole number of images per batch, 1 or more")
    num_workers: Optional[int] = setting("0 (no worker processes), a positive number or null")  # noqa: UP045
    show: int = setting("how many rows to print, 0 or more")


refuse = partial(refusal, PredictSettings)  # refuse(name, value): one line, ending in what it takes


def check_predict_settings(s: PredictSettings) -> None:
    """The rules the types cannot say."""
    check_detector_command(s)
    if s.batch_size < 1:
        raise refuse("batch_size", s.batch_size)
    if s.num_workers is not None and s.num_workers < 0:
        raise refuse("num_workers", s.num_workers)
    if s.show < 0:
        raise refuse("show", s.show)


register_schema(None, PredictSettings, check_predict_settings, name="predict_schema")


@dataclass
class ExportSettings(CommandSettings):
    abstain: Any = None  # the abstain group (its own schema)
    ckpt_path: str = setting("<run dir>/checkpoints/<best>.ckpt")
    format: str = setting("onnx (one file) or hf (a Hugging Face folder with a model card)")
    output: Optional[str] = setting("a file (format=onnx) or folder (hf) to write, or null for the run folder")  # noqa: UP045
    opset: int = setting("an ONNX opset number, e.g. 18")
    threshold: Optional[float] = setting(THRESHOLD_USE)  # noqa: UP045
    check_images: Any = setting("a folder of images (or a list) to check the export on, or null for the test split")
    check_limit: int = setting("a number of images, 1 or more")
    tolerance: float = setting("the largest difference in P(AI) allowed between ONNX and PyTorch, above 0")


def check_export_settings(s: ExportSettings) -> None:
    check_detector_command(s)
    refuse = partial(refusal, ExportSettings)
    if s.format not in ("onnx", "hf"):
        raise refuse("format", s.format)
    if s.check_limit < 1:
        raise refuse("check_limit", s.check_limit)
    if not s.tolerance > 0:
        raise refuse("tolerance", s.tolerance)


register_schema(None, ExportSettings, check_export_settings, name="export_schema")
