"""`eval.py`'s, `calibrate.py`'s and `compare.py`'s settings, declared once as structured configs (each field's default
and what it does): types checked as the config composes, the fields' rules (and compare's below) before any
checkpoint loads; each refusal names the setting and what it takes."""

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
    # null: the run's own test split (from split.csv beside the checkpoint's run). A folder: all of it.
    root: Any = setting("an AI/ + Real/ folder (or several), or null for the checkpoint's own test split", None)
    batch_size: int = setting("a whole number of images per batch, 1 or more", 64, low=1)
    num_workers: Optional[int] = setting("0 (no worker processes), a positive number or null", None, low=0)
    # null: the training run's rule for a usable image (stored in the checkpoint).
    min_image_side: Optional[int] = setting("a side in pixels, 1 or more, or null for the training run's", None, low=1)
    cache_dir: Optional[str] = setting("a folder for the file fingerprints, or null", None)  # YAML: data/cache


@dataclass
class Perturbations:
    """The same perturbation for both classes: JPEG quality, Gaussian blur sigma (px), downscale factor."""

    jpeg: list[int] = setting("JPEG qualities from 1 to 100, e.g. [95,75,50,30]", [95, 75, 50, 30], low=1, high=100)
    blur: list[float] = setting("Gaussian blur sigmas in pixels, above 0, e.g. [1,2,3]", [1.0, 2.0, 3.0], above=0)
    downscale: list[float] = setting("scale factors between 0 and 1, e.g. [0.5,0.25]", [0.5, 0.25], above=0, below=1)


@dataclass
class EvalSettings(DetectorCommandSettings):
    """eval.py's settings, each with its default and what it does."""

    data: EvalData = setting(
        "the images to evaluate on: {root, batch_size, num_workers, min_image_side, cache_dir}", EvalData()
    )
    # More AI/ + Real/ folders, each reported like the test split, side by side (cross-dataset generalisation).
    extra_sets: Any = setting("a list of AI/ + Real/ folders, each reported like the test split", [])
    robustness: bool = setting("true (re-score under JPEG, blur and downscaling) or false", True)
    perturbations: Perturbations = setting("{jpeg: [...], blur: [...], downscale: [...]}", Perturbations())
    # Equal-width bins of P(AI): the ECE's and the reliability diagram's.
    calibration_bins: int = setting("a number of bins, 1 or more", 15, low=1)
    # Resamples of the stratified bootstrap behind every 95% interval, and its seed.
    bootstrap: int = setting(BOOTSTRAP, 2000, low=100)
    seed: int = setting("a whole number", 42)


@dataclass
class CompareSettings(CommandSettings):
    """compare.py's settings. Each input: a predictions file (a run's or eval.py's predictions.csv, a sweep's
    oof_predictions.csv), the run or sweep folder holding one, or a checkpoint (scored on data.root, or on its run's
    test split)."""

    inputs: list[str] = setting("two or more prediction files, run or sweep folders, or checkpoints: inputs=[A,B]")
    # Display names, one per input (null: the folder names).
    names: Optional[list[str]] = setting("one display name per input, e.g. names=[a,b], or null", None)
    # For checkpoints: the images to score (null: the first checkpoint's run test split).
    data: EvalData = setting("the images to score checkpoints on: {root, batch_size, num_workers, ...}", EvalData())
    device: str = setting("auto, cpu, cuda or cuda:N", "auto")
    # Resamples of the paired bootstrap, and its seed.
    bootstrap: int = setting(BOOTSTRAP, 2000, low=100)
    seed: int = setting("a whole number", 42)


register_schema(None, EvalSettings, name="eval_schema")


def check_compare_settings(s: CompareSettings) -> None:
    if len(s.inputs) < 2:
        raise refusal(CompareSettings, "inputs", s.inputs)
    if s.names is not None and len(s.names) != len(s.inputs):
        raise ConfigError(f"names= has {len(s.names)} entries for {len(s.inputs)} inputs: give one name per input")


register_schema(None, CompareSettings, check_compare_settings, name="compare_schema")


@dataclass
class CalibrateData(EvalData):
    # A folder with AI/ and Real/ subfolders, or several (a list, or a mapping name -> folder).
    root: Any = setting("a labelled AI/ + Real/ folder of your own images (or several: a list or a mapping)")
    # Near-duplicates (pHash and dHash Hamming distances) stay in one half, so the check is not flattered; null: off.
    near_duplicates: Optional[NearDuplicates] = setting(
        "{phash: 0-64, dhash: 0-64} (Hamming distances), or null to switch the search off", NearDuplicates()
    )


@dataclass
class CalibrateSettings(CommandSettings):
    """calibrate.py's settings: how the detector does on your own labelled images (AI/ + Real/), and a copy of it
    whose verdicts are calibrated there: threshold, temperature, prediction sets and familiarity cutoff fitted on
    one half of the folder and checked on the other (fit=all: then refitted on every image). The weights do not
    change."""

    abstain: Any = None  # the abstain group (its own schema): alpha and familiar_quantile are fitted here
    ckpt_path: str = setting("<run dir>/checkpoints/<best>.ckpt")
    # auto: cuda when there is one.
    device: str = setting("auto, cpu, cuda or cuda:N", "auto")
    data: CalibrateData = setting("the images to calibrate on: {root, batch_size, num_workers, ...}", CalibrateData())
    # half: fit on a seeded half (per class, near-duplicates whole) and check on the other. all: the same check,
    # then the record is refitted on every image (what you deploy; its promise was checked at half the images).
    fit: str = setting(
        "half (fit on one half, check on the other) or all (then refit on every image)",
        "half",
        choices=("half", "all"),
    )
    # The calibrated checkpoint; null: calibrated.ckpt in this command's run folder (beside report.md).
    output: Optional[str] = setting(
        "the calibrated checkpoint to write, or null for calibrated.ckpt in the run folder", None
    )
    bootstrap: int = setting(BOOTSTRAP, 1000, low=100)
    seed: int = setting("a whole number", 42)


register_schema(None, CalibrateSettings, name="calibrate_schema")
