"""`export.py`'s settings as a structured config (configs/export.yaml says what each does): types checked as the
config composes, the fields' rules before the checkpoint loads; each refusal names the setting and what it takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from trustthepixels.config import CommandSettings, register_schema, setting
from trustthepixels.detector.settings import THRESHOLD_USE


@dataclass
class ExportSettings(CommandSettings):
    abstain: Any = None  # the abstain group (its own schema)
    ckpt_path: str = setting("<run dir>/checkpoints/<best>.ckpt")
    format: str = setting("onnx (one file) or hf (a Hugging Face folder with a model card)", choices=("onnx", "hf"))
    output: Optional[str] = setting("a file (format=onnx) or folder (hf) to write, or null for the run folder")
    opset: int = setting("an ONNX opset number, e.g. 18")
    threshold: Optional[float] = setting(THRESHOLD_USE, low=0, high=1)
    check_images: Any = setting("a folder of images (or a list) to check the export on, or null for the test split")
    check_limit: int = setting("a number of images, 1 or more", low=1)
    tolerance: float = setting("the largest difference in P(AI) allowed between ONNX and PyTorch, above 0", above=0)


register_schema(None, ExportSettings, name="export_schema")
