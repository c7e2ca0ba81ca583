"""`predict.py`'s settings as a structured config (configs/predict.yaml says what each does): types checked as the
config composes, the fields' rules before the checkpoint loads; each refusal names the setting and what it takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from trustthepixels.config import register_schema, setting
from trustthepixels.detector.settings import DetectorCommandSettings


@dataclass
class PredictSettings(DetectorCommandSettings):
    input: Any = setting("an image, a folder of images, or a list of them")
    output: Optional[str] = setting("a CSV file to write, or null for predictions.csv in the run folder")
    explain: bool = setting("true (a Grad-CAM heatmap per image) or false")
    batch_size: int = setting("a whole number of images per batch, 1 or more", low=1)
    num_workers: Optional[int] = setting("0 (no worker processes), a positive number or null", low=0)
    show: int = setting("how many rows to print, 0 or more", low=0)


register_schema(None, PredictSettings, name="predict_schema")
