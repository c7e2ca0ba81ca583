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
    device: str = setting("auto, cpu, cuda or cuda:N")
    threshold: Optional[float] = setting(THRESHOLD_USE, low=0, high=1)
