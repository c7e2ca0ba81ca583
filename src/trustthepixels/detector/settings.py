"""The settings every command that answers with a detector shares (eval.py, predict.py, serve.py): the base of their
structured configs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from trustthepixels.config import CommandSettings, setting

THRESHOLD_USE = "a P(AI) between 0 and 1, or null for the checkpoint's"


@dataclass
class DetectorCommandSettings(CommandSettings):
    abstain: Any = None  # the abstain group (its own schema)
    ckpt_path: str = setting("<run dir>/checkpoints/<best>.ckpt")
    # auto: cuda when there is one.
    device: str = setting("auto, cpu, cuda or cuda:N", "auto")
    # "AI" when P(AI) is above it. null: the threshold of the checkpoint's calibration record (serve.py with
    # backend=onnx: the one stored in the ONNX file), so eval.py, predict.py and serve.py decide alike.
    threshold: Optional[float] = setting(THRESHOLD_USE, None, low=0, high=1)
