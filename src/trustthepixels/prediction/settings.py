"""`predict.py`'s settings, declared once as a structured config (each field's default and what it does): types checked
as the config composes, the fields' rules before the checkpoint loads; each refusal names the setting and what it
takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from trustthepixels.config import register_schema, setting
from trustthepixels.detector.settings import DetectorCommandSettings


@dataclass
class PredictSettings(DetectorCommandSettings):
    """predict.py's settings, each with its default and what it does."""

    input: Any = setting("an image, a folder of images, or a list of them")  # a folder: every image below it
    # The CSV (source, path, label, logit, p_ai, verdict, threshold, error); null: predictions.csv in the run folder.
    output: Optional[str] = setting("a CSV file to write, or null for predictions.csv in the run folder", None)
    # Grad-CAM overlay per image, in <run dir>/gradcam/.
    explain: bool = setting("true (a Grad-CAM heatmap per image) or false", False)
    batch_size: int = setting("a whole number of images per batch, 1 or more", 64, low=1)
    num_workers: Optional[int] = setting("0 (no worker processes), a positive number or null", None, low=0)
    # Rows printed on the terminal (all of them are in the CSV).
    show: int = setting("how many rows to print, 0 or more", 50, low=0)


register_schema(None, PredictSettings, name="predict_schema")
