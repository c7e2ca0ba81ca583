"""`eval.py`'s, `calibrate.py`'s and `compare.py`'s settings as structured configs (configs/eval.yaml,
calibrate.yaml and compare.yaml say what each does): types checked as the config composes, the fields' rules (and
compare's below) before any checkpoint loads; each refusal names the setting and what it takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from trustthepixels.config import CommandSettings, refusal, register_schema, setting
from trustthepixels.data.loading.settings import NearDuplicates
from trustthepixels.detector.settings import DetectorCommandSettings
from trustthepixels.errors import ConfigError

BOOTSTRAP = "a number of bootstrap resamples, 100 or more, e.g. 2000"


@dataclass
class EvalData:
    root: Any = setting("an AI/ + Real/ folder (or several), or null for the checkpoint's own test split")
    batch_size: int = setting("a whole number of images per batch, 1 or more", low=1)
    num_workers: Optional[int] = setting("0 (no worker processes), a positive number or null", low=0)
    min_image_side: Optional[int] = setting("a side in pixels, 1 or more, or null for the training run's", low=1)
    cache_dir: Optional[str] = setting("a folder for the file fingerprints, or null")


@dataclass
class Perturbations:
    jpeg: list[int] = setting("JPEG qualities from 1 to 100, e.g. [95,75,50,30]", low=1, high=100)
    blur: list[float] = setting("Gaussian blur sigmas in pixels, above 0, e.g. [1,2,3]", above=0)
    downscale: list[float] = setting("scale factors between 0 and 1, e.g. [0.5,0.25]", above=0, below=1)


@dataclass
class EvalSettings(DetectorCommandSettings):
    data: EvalData = setting("the images to evaluate on: {root, batch_size, num_workers, min_image_side, cache_dir}")
    extra_sets: Any = setting("a list of AI/ + Real/ folders, each reported like the test split")
    robustness: bool = setting("true (re-score under JPEG, blur and downscaling) or false")
    perturbations: Perturbations = setting("{jpeg: [...], blur: [...], downscale: [...]}")
    calibration_bins: int = setting("a number of bins, 1 or more", low=1)
    bootstrap: int = setting(BOOTSTRAP, low=100)
    seed: int = setting("a whole number")


@dataclass
class CompareSettings(CommandSettings):
    inputs: list[str] = setting("two or more prediction files, run or sweep folders, or checkpoints: inputs=[A,B]")
    names: Optional[list[str]] = setting("one display name per input, e.g. names=[a,b], or null")
    data: EvalData = setting("the images to score checkpoints on: {root, batch_size, num_workers, ...}")
    device: str = setting("auto, cpu, cuda or cuda:N")
    bootstrap: int = setting(BOOTSTRAP, low=100)
    seed: int = setting("a whole number")


register_schema(None, EvalSettings, name="eval_schema")


def check_compare_settings(s: CompareSettings) -> None:
    if len(s.inputs) < 2:
        raise refusal(CompareSettings, "inputs", s.inputs)
    if s.names is not None and len(s.names) != len(s.inputs):
        raise ConfigError(f"names= has {len(s.names)} entries for {len(s.inputs)} inputs: give one name per input")


register_schema(None, CompareSettings, check_compare_settings, name="compare_schema")


@dataclass
class CalibrateData(EvalData):
    root: Any = setting("a labelled AI/ + Real/ folder of your own images (or several: a list or a mapping)")
    near_duplicates: Optional[NearDuplicates] = setting(
        "{phash: 0-64, dhash: 0-64} (Hamming distances), or null to switch the search off"
    )


@dataclass
class CalibrateSettings(CommandSettings):
    abstain: Any = None  # the abstain group (its own schema): alpha and familiar_quantile are fitted here
    ckpt_path: str = setting("<run dir>/checkpoints/<best>.ckpt")
    device: str = setting("auto, cpu, cuda or cuda:N")
    data: CalibrateData = setting("the images to calibrate on: {root, batch_size, num_workers, ...}")
    fit: str = setting(
        "half (fit on one half, check on the other) or all (then refit on every image)", choices=("half", "all")
    )
    output: Optional[str] = setting("the calibrated checkpoint to write, or null for calibrated.ckpt in the run folder")
    bootstrap: int = setting(BOOTSTRAP, low=100)
    seed: int = setting("a whole number")


register_schema(None, CalibrateSettings, name="calibrate_schema")
