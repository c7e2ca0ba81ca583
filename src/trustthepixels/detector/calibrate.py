"""Fitting a detector's calibration record on labelled image files: train.py's last step (the run's calibration
part) and calibrate.py's (a folder of the user's own images) are this one pass."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trustthepixels.detector.checkpoint import Detector
from trustthepixels.detector.scoring import Scores
from trustthepixels.errors import UserError
from trustthepixels.metrics.calibration import Calibration, check, fit_calibration, too_few
from trustthepixels.metrics.core import CalibrationError
from trustthepixels.metrics.settings import DEFAULT_ALPHA, DEFAULT_QUANTILE

log = logging.getLogger(__name__)


@dataclass
class LabelledScores:
    """The usable files of a labelled set, scored once: labels, logits and familiarity distances (NaN without a
    familiarity score), and how many files could not be used."""

    paths: list[Path]
    labels: np.ndarray
    logits: np.ndarray
    distances: np.ndarray
    unusable: int

    @classmethod
    def of(cls, paths: Sequence[Path], labels: np.ndarray, scores: Scores) -> LabelledScores:
        """Labelled files' `Scores` as they came (every file, NaN distances without a familiarity score)."""
        distances = scores.distances if scores.distances is not None else np.full(len(paths), np.nan)
        return cls(list(paths), np.asarray(labels, dtype=int), scores.logits, distances, 0)

    def subset(self, chosen: np.ndarray) -> LabelledScores:
        paths = [p for p, keep in zip(self.paths, chosen, strict=True) if keep]
        return LabelledScores(paths, self.labels[chosen], self.logits[chosen], self.distances[chosen], 0)


def score_labelled(
    detector: Detector,
    files: Sequence[tuple[Path, int]],
    batch_size: int,
    num_workers: int,
    device: str,
    description: str,
) -> LabelledScores:
    """Score (path, label) files through the detector, as every command scores an image."""
    paths = [Path(p) for p, _ in files]
    scores = detector.score_files(paths, batch_size, num_workers, device, description=description)
    usable = np.isfinite(scores.logits)
    if scores.errors:
        log.warning(
            "%d of %d files could not be used and are left out (e.g. %s)",
            len(scores.errors),
            len(paths),
            next(iter(scores.errors.values())),
        )
    labels = np.array([y for _, y in files], dtype=int)
    kept = LabelledScores.of(paths, labels, scores).subset(usable)
    kept.unusable = int((~usable).sum())
    return kept


def fit_record(
    detector: Detector,
    scores: LabelledScores,
    abstain: Mapping[str, Any] | None,
    sources: Sequence[str],
    part: str,
    strict: bool = False,
) -> Calibration:
    """The calibration record fitted on these scores at `abstain.alpha` and `abstain.familiar_quantile`. Too few
    images of a class for a prediction set that is ever one label: one line (`strict`: calibrate.py refuses; else
    a warning: every verdict will be `uncertain`)."""
    abstain = abstain or {}
    alpha = float(abstain.get("alpha", DEFAULT_ALPHA))
    quantile = abstain.get("familiar_quantile", DEFAULT_QUANTILE)
    if not np.isfinite(scores.logits).all():
        raise UserError(f"{detector.checkpoint.name}: its scores on the {part} are not finite (the run diverged)")
    if (short := too_few(scores.labels, alpha)) is not None:
        message = f"The {part} has {short} (abstain.alpha): add images"
        if strict:
            raise UserError(message)
        log.warning("%s; until then every verdict is `uncertain`", message)
    distances = scores.distances if detector.familiarity is not None else None
    try:
        calibration = fit_calibration(
            scores.labels, scores.logits, distances, alpha, None if quantile is None else float(quantile), sources, part
        )
    except CalibrationError as err:
        raise UserError(f"Cannot calibrate on the {part}: {err}") from err
    if calibration.temperature_note:
        log.warning("No temperature fitted: %s", calibration.temperature_note)
    return calibration


def check_record(record: Calibration, detector: Detector, scores: LabelledScores) -> dict[str, dict[str, float]]:
    """`metrics.calibration.check` of a record on labelled scores it was not fitted on, their familiarity read
    against that record's own reference."""
    familiarity = record.familiarity(scores.distances) if detector.familiarity is not None else None
    return check(record, scores.labels, scores.logits, familiarity)
