"""`predict.py`'s settings as a structured config (configs/predict.yaml says what each does): types checked as the
config composes, the rules below before the checkpoint loads; each refusal names the setting and what it takes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

from trustthepixels.config import refusal, register_schema, setting
from trustthepixels.detector.settings import DetectorCommandSettings, check_detector_command


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
