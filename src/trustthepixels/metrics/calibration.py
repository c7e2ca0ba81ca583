"""The calibration record: everything that turns a detector's scores into verdicts, fitted in one place, on one
labelled set of images that chose nothing else.

`fit_calibration` takes the logits, labels and familiarity distances of a labelled set (train.py: the run's
calibration part; calibrate.py: half of a folder of the user's own images) and fits:
- the decision threshold on P(AI) (balanced accuracy, `choose_threshold`),
- the temperature (log loss, `fit_temperature`),
- the class-conditional conformal prediction sets at `alpha` (metrics/conformal.py),
- the familiarity reference: the set's own distances from the training images, so that an image's familiarity is
  the share of them at least as far, and `unfamiliar` is below 1 - familiar_quantile (model/familiarity.py).
It says where it was fitted (sources, images per class, date) and carries the figures that checked it. A checkpoint
holds one record under `calibration`; every command reads it and refits nothing. `decide` is the one verdict rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy.stats import betabinom

from trustthepixels.config import check_value
from trustthepixels.metrics.conformal import UNCERTAIN, UNFAMILIAR, ConformalSets, fit_conformal
from trustthepixels.metrics.core import choose_threshold, fit_temperature, sigmoid
from trustthepixels.metrics.intervals import clopper_pearson
from trustthepixels.metrics.selective import abstention_rates
from trustthepixels.metrics.settings import AbstainSettings

KEY = "calibration"  # the checkpoint entry
THRESHOLD_RULE = "balanced accuracy"
VERDICTS = ("Real", "AI")


def images_needed(alpha: float) -> int:
    """The fewest calibration images of a class for a prediction set that is not always both labels at `alpha`:
    the smallest n with ceil((n + 1)(1 - alpha)) <= n."""
    n = 1
    while math.ceil((n + 1) * (1 - alpha)) > n:
        n += 1
    return n


@dataclass(frozen=True)
class Calibration:
    threshold: float  # AI when P(AI) > threshold
    temperature: float  # P(AI) = sigmoid(logit / temperature) is calibrated; 1.0 when it could not be fitted
    sets: ConformalSets  # when a verdict has no basis (`uncertain`), at sets.alpha
    familiar_quantile: float | None  # unfamiliar below 1 - this; None: no familiarity cutoff
    reference: tuple[float, ...]  # the calibration images' familiarity distances, sorted (empty: none)
    fitted_on: dict[str, Any]  # sources, images per class, what part of them, date
    checks: dict[str, Any] = field(default_factory=dict)  # the checking figures, where a checking set was kept
    threshold_rule: str = THRESHOLD_RULE
    temperature_note: str = ""

    @property
    def familiar_min(self) -> float | None:
        """Familiarity below this is `unfamiliar`; None without a familiarity cutoff."""
        if self.familiar_quantile is None or not self.reference:
            return None
        return 1.0 - self.familiar_quantile

    def familiarity(self, distances: np.ndarray) -> np.ndarray:
        """The share of the reference distances at least as large as each distance (in float32, as the scoring
        graph compares them); NaN for a NaN distance or without a reference."""
        distances = np.asarray(distances, dtype=np.float32)
        if not self.reference:
            return np.full(distances.shape, np.nan)
        reference = np.asarray(self.reference, dtype=np.float32)
        below = np.searchsorted(reference, distances, side="left")
        out = (len(reference) - below) / len(reference)
        return np.where(np.isnan(distances), np.nan, out)

    def verdicts(
        self, p_ai: np.ndarray, familiarity: np.ndarray | None = None, threshold: float | None = None
    ) -> np.ndarray:
        """This record's verdicts (`decide`), at its own threshold unless one is given."""
        value = self.threshold if threshold is None else threshold
        return decide(p_ai, value, self.sets, familiarity, self.familiar_min)

    def state(self) -> dict[str, Any]:
        """Plain data for a checkpoint (`torch.load(weights_only=True)`) and JSON."""
        state = asdict(self)
        state["sets"] = self.sets.state()
        state["reference"] = [float(d) for d in self.reference]
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Calibration:
        values = dict(state)
        values["sets"] = ConformalSets.from_state(values["sets"])
        values["reference"] = tuple(float(d) for d in values.get("reference") or ())
        return cls(**values)

    def summary(self) -> dict[str, Any]:
        """The record without its reference distances: metrics.json, the model card, ONNX metadata."""
        state = self.state()
        state["reference"] = len(self.reference)
        return state


def decide(
    p_ai: np.ndarray,
    threshold: float,
    sets: ConformalSets | None = None,
    familiarity: np.ndarray | None = None,
    familiar_min: float | None = None,
) -> np.ndarray:
    """The verdict rule: AI when P(AI) > threshold, else Real; with `sets`, that verdict stands only when the
    image's prediction set holds that one label (`uncertain` otherwise: both labels, none, or one that disagrees
    with the threshold); with `familiar_min`, an image less familiar than it is `unfamiliar`, whatever its P(AI)
    (a NaN familiarity: no score, no flag)."""
    p_ai = np.asarray(p_ai, dtype=np.float64)
    verdicts = np.where(p_ai > threshold, VERDICTS[1], VERDICTS[0]).astype(object)
    if sets is not None:
        verdicts = np.where(sets.verdicts(p_ai) == verdicts, verdicts, UNCERTAIN)
    if familiar_min is not None and familiarity is not None:
        familiarity = np.broadcast_to(np.asarray(familiarity, dtype=np.float64), p_ai.shape)
        verdicts = np.where(familiarity < familiar_min, UNFAMILIAR, verdicts)
    return verdicts.astype(str)


def fit_calibration(
    labels: np.ndarray,
    logits: np.ndarray,
    distances: np.ndarray | None,
    alpha: float,
    familiar_quantile: float | None,
    sources: Sequence[str],
    part: str,
) -> Calibration:
    """The record, from one labelled set's logits (finite), labels (1 AI, 0 Real) and familiarity distances (None
    or all NaN: the detector has no familiarity score). Raises `CalibrationError` when a class is missing."""
    if familiar_quantile is not None:
        check_value(AbstainSettings, "familiar_quantile", familiar_quantile, "abstain.")
    labels, logits = np.asarray(labels).astype(int), np.asarray(logits, dtype=np.float64)
    threshold = choose_threshold(labels, sigmoid(logits))
    temperature = fit_temperature(labels, logits)
    sets = fit_conformal(labels, sigmoid(logits), alpha)
    reference: tuple[float, ...] = ()
    if distances is not None and familiar_quantile is not None:
        finite = np.asarray(distances, dtype=np.float32)
        reference = tuple(float(d) for d in np.sort(finite[np.isfinite(finite)]))
    fitted_on = {
        "sources": list(sources),
        "part": part,
        "images": {"AI": int((labels == 1).sum()), "Real": int((labels == 0).sum())},
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    fitted = (threshold, temperature.value, sets, familiar_quantile, reference, fitted_on)
    return Calibration(*fitted, temperature_note=temperature.note)


def too_few(labels: np.ndarray, alpha: float) -> str | None:
    """Why the prediction sets at `alpha` would hold both labels for every image (a class with too few images), or
    None."""
    labels = np.asarray(labels).astype(int)
    needed = images_needed(alpha)
    counts = {name: int((labels == c).sum()) for c, name in enumerate(VERDICTS)}
    short = [f"{n} {name}" for name, n in counts.items() if n < needed]
    if not short:
        return None
    return f"{' and '.join(short)} images: alpha={alpha:g} needs at least {needed} of each class"


def check(
    calibration: Calibration, labels: np.ndarray, logits: np.ndarray, familiarity: np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """What the record promises, measured on labelled images it was not fitted on (their familiarity by this record,
    `Calibration.familiarity`): coverage, accuracy on answered images and confident errors, each with its exact 95%
    interval, for all images and for each class; per class also `set_coverage`, the share whose prediction set holds
    their true label (conformal's promise: at least 1 - alpha on images like the calibration images), with the
    range that promise allows on this many images (`set_coverage_band`, `promise_band`)."""
    labels, logits = np.asarray(labels).astype(int), np.asarray(logits, dtype=np.float64)
    p_ai = sigmoid(logits)
    verdicts = calibration.verdicts(p_ai, familiarity)
    holds_ai, holds_real = calibration.sets.contains(p_ai)
    out = {"all": abstention_rates(labels, verdicts)}
    for c, name in enumerate(VERDICTS):
        chosen = labels == c
        out[name] = abstention_rates(labels[chosen], verdicts[chosen])
        held = int((holds_ai if c == 1 else holds_real)[chosen].sum())
        n = int(chosen.sum())
        out[name]["set_coverage"] = held / n if n else math.nan
        out[name]["set_coverage_lo"], out[name]["set_coverage_hi"] = clopper_pearson(held, n)
        fitted_on = calibration.sets.n_ai if c == 1 else calibration.sets.n_real
        out[name]["set_coverage_band"] = list(promise_band(n, calibration.sets.alpha, fitted_on))
    return out


def promise_band(n: int, alpha: float, n_calibration: int) -> tuple[float, float]:
    """The central 95% range of the share of n new images whose set holds their label, where the promise holds. Two
    draws make it vary: the calibration images (a set fitted on n_calibration of them holds the label of a
    Beta(k, n_calibration + 1 - k) share of such images, k = ceil((n_calibration + 1)(1 - alpha)), the rank
    `class_quantile` takes) and the n images measured (beta-binomial). A measured set coverage below it says the
    promise does not hold on these images; a band of the test draw alone would say so of sound sets (10% of the
    time for 200 calibration and 400 test images of a class)."""
    if n == 0:
        return math.nan, math.nan
    k = math.ceil((n_calibration + 1) * (1 - alpha))
    if k > n_calibration:  # too few calibration images: the set always holds the label
        return 1.0, 1.0
    low, high = betabinom.ppf([0.025, 0.975], n, k, n_calibration + 1 - k)
    return float(low / n), float(high / n)
