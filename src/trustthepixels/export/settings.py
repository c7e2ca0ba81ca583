"""`export.py`'s settings, declared once as a structured config (each field's default and what it does): types checked
as the config composes, the fields' rules before the checkpoint loads; each refusal names the setting and what it
takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from trustthepixels.config import CommandSettings, register_schema, setting
from trustthepixels.detector.settings import THRESHOLD_USE


@dataclass
class ExportSettings(CommandSettings):
    """export.py's settings, each with its default and what it does."""

    abstain: Any = None  # the abstain group (its own schema)
    ckpt_path: str = setting("<run dir>/checkpoints/<best>.ckpt")
    format: str = setting(
        "onnx (one file) or hf (a Hugging Face folder with a model card)", "onnx", choices=("onnx", "hf")
    )
    # null: detector.onnx (format=hf: the folder hf/) in the run directory.
    output: Optional[str] = setting("a file (format=onnx) or folder (hf) to write, or null for the run folder", None)
    opset: int = setting("an ONNX opset number, e.g. 18", 18)
    # Stored in the model's metadata (serve.py decides at it). null: the checkpoint's calibration record's, as
    # predict.py, eval.py and serve.py decide.
    threshold: Optional[float] = setting(THRESHOLD_USE, None, low=0, high=1)
    # Real images to compare ONNX Runtime with PyTorch on; null: the run's own test split.
    check_images: Any = setting(
        "a folder of images (or a list) to check the export on, or null for the test split", None
    )
    check_limit: int = setting("a number of images, 1 or more", 64, low=1)
    tolerance: float = setting(
        "the largest difference in P(AI) allowed between ONNX and PyTorch, above 0", 1.0e-4, above=0
    )


register_schema(None, ExportSettings, name="export_schema")
