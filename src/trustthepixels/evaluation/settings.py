"""`eval.py`'s and `compare.py`'s settings as structured configs (configs/eval.yaml and compare.yaml say what each
does): types checked as the config composes, the rules below before any checkpoint loads; each refusal names the
setting and what it takes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

from trustthepixels.config import CommandSettings, refusal, register_schema, setting
from trustthepixels.detector.settings import DetectorCommandSettings, check_detector_command
from trustthepixels.errors import ConfigError


@dataclass
class EvalData:
    root: Any = setting("an AI/ + Real/ folder (or several), or null for the checkpoint's own test split")
    batch_size: int = setting("a whole number of images per batch, 1 or more")
    num_workers: Optional[int] = setting("0 (no worker processes), a positive number or null")  # noqa: UP045
    min_image_side: Optional[int] = setting("a side in pixels, 1 or more, or null for the training run's")  # noqa: UP045
    cache_dir: Optional[str] = setting("a folder for the file fingerprints, or null")  # noqa: UP045


@dataclass
class Perturbations:
    jpeg: list[int] = setting("JPEG qualities from 1 to 100, e.g. [95,75,50,30]")
    blur: list[float] = setting("Gaussian blur sigmas in pixels, above 0, e.g. [1,2,3]")
    downscale: list[float] = setting("scale factors between 0 and 1, e.g. [0.5,0.25]")


@dataclass
class EvalSettings(DetectorCommandSettings):
    data: EvalData = setting("the images to evaluate on: {root, batch_size, num_workers, min_image_side, cache_dir}")
    extra_sets: Any = setting("a list of AI/ + Real/ folders, each reported like the test split")
    robustness: bool = setting("true (re-score under JPEG, blur and downscaling) or false")
    perturbations: Perturbations = setting("{jpeg: [...], blur: [...], downscale: [...]}")
    calibration_bins: int = setting("a number of bins, 1 or more")
    bootstrap: int = setting("a number of bootstrap resamples, 100 or more, e.g. 2000")
    seed: int = setting("a whole number")


refuse = partial(refusal, EvalSettings)  # refuse(name, value): one line, ending in what it takes


@dataclass
class CompareSettings(CommandSettings):
    inputs: list[str] = setting("two or more prediction files, run or sweep folders, or checkpoints: inputs=[A,B]")
    names: Optional[list[str]] = setting("one display name per input, e.g. names=[a,b], or null")  # noqa: UP045
    data: EvalData = setting("the images to score checkpoints on: {root, batch_size, num_workers, ...}")
    device: str = setting("auto, cpu, cuda or cuda:N")
    bootstrap: int = setting("a number of bootstrap resamples, 100 or more, e.g. 2000")
    seed: int = setting("a whole number")


def check_eval_data(d: EvalData) -> None:
    if d.batch_size < 1:
        raise refusal(EvalData, "batch_size", d.batch_size, "data.")
    if d.num_workers is not None and d.num_workers < 0:
        raise refusal(EvalData, "num_workers", d.num_workers, "data.")
    if d.min_image_side is not None and d.min_image_side < 1:
        raise refusal(EvalData, "min_image_side", d.min_image_side, "data.")


def check_eval_settings(s: EvalSettings) -> None:
    """The rules the types cannot say."""
    check_detector_command(s)
    check_eval_data(s.data)
    if s.calibration_bins < 1:
        raise refuse("calibration_bins", s.calibration_bins)
    if s.bootstrap < 100:
        raise refuse("bootstrap", s.bootstrap)
    p = s.perturbations
    if not all(1 <= q <= 100 for q in p.jpeg):
        raise refusal(Perturbations, "jpeg", p.jpeg, "perturbations.")
    if not all(sigma > 0 for sigma in p.blur):
        raise refusal(Perturbations, "blur", p.blur, "perturbations.")
    if not all(0 < f < 1 for f in p.downscale):
        raise refusal(Perturbations, "downscale", p.downscale, "perturbations.")


register_schema(None, EvalSettings, check_eval_settings, name="eval_schema")


def check_compare_settings(s: CompareSettings) -> None:
    check_eval_data(s.data)
    if len(s.inputs) < 2:
        raise refusal(CompareSettings, "inputs", s.inputs)
    if s.names is not None and len(s.names) != len(s.inputs):
        raise ConfigError(f"names= has {len(s.names)} entries for {len(s.inputs)} inputs: give one name per input")
    if s.bootstrap < 100:
        raise refusal(CompareSettings, "bootstrap", s.bootstrap)


register_schema(None, CompareSettings, check_compare_settings, name="compare_schema")
