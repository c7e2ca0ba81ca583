"""The settings every command that answers with a detector shares (eval.py, predict.py, serve.py): the base of their
structured configs, and its rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from trustthepixels.config import refusal, setting

THRESHOLD_USE = "a P(AI) between 0 and 1, or null for the checkpoint's"


@dataclass
class DetectorCommandSettings:
    paths: Any = None  # the paths group (its own config)
    abstain: Any = None  # the abstain group (its own schema)
    task_name: str = setting("a name for the run folder")
    ckpt_path: str = setting("<run dir>/checkpoints/<best>.ckpt")
    device: str = setting("auto, cpu, cuda or cuda:N")
    threshold: Optional[float] = setting(THRESHOLD_USE)  # noqa: UP045 (OmegaConf reads Optional, not X | None)


def check_detector_command(s: DetectorCommandSettings) -> None:
    """The shared rule: a threshold is a probability."""
    if s.threshold is not None and not 0 <= s.threshold <= 1:
        raise refusal(DetectorCommandSettings, "threshold", s.threshold)
