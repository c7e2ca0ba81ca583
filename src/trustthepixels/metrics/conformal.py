"""When the detector has no basis for a verdict: class-conditional split conformal prediction sets.

Fitted on a calibration set (images that neither trained nor chose the model; metrics/calibration.py): for each
class c, the score of an image is 1 - P(c), and q_c is the ceil((n_c + 1)(1 - alpha))-th smallest score of the n_c
calibration images of class c (Vovk 2012; Angelopoulos & Bates 2021, section 4.1). A new image's set holds every
class whose score is at most its q_c. The promise, per class: for images exchangeable with the calibration set, the
true label is in the set with probability at least 1 - alpha (and at most 1 - alpha + 1 / (n_c + 1)).

With P = P(AI), "AI in the set" is P >= 1 - q_AI and "Real in the set" is P <= q_Real: two cutoffs on P(AI). A set
of one label is a definite verdict; both labels (the model cannot tell them apart here) or none (the image fits
neither class as the calibration images did) is `uncertain`. The promise holds only for images like the
calibration set: a change of source breaks it, which is what a familiarity score is for.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from trustthepixels.config import check_value
from trustthepixels.metrics.settings import DEFAULT_ALPHA, AbstainSettings

UNCERTAIN = "uncertain"
UNFAMILIAR = "unfamiliar"  # the image is unlike the training images (model/familiarity.py)


@dataclass(frozen=True)
class ConformalSets:
    alpha: float
    ai_min_p: float  # AI is in an image's set when P(AI) >= this (-inf: always)
    real_max_p: float  # Real is in it when P(AI) <= this (+inf: always)
    n_ai: int  # calibration images of each class it was fitted on
    n_real: int

    def contains(self, p_ai: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(AI in the set, Real in the set) for each P(AI)."""
        p_ai = np.asarray(p_ai, dtype=np.float64)
        return p_ai >= self.ai_min_p, p_ai <= self.real_max_p

    def verdicts(self, p_ai: np.ndarray) -> np.ndarray:
        """ "AI", "Real" or "uncertain" for each P(AI)."""
        ai, real = self.contains(p_ai)
        return np.where(ai & ~real, "AI", np.where(real & ~ai, "Real", UNCERTAIN))

    def verdict(self, p_ai: float) -> str:
        return str(self.verdicts(np.array([p_ai]))[0])

    def state(self) -> dict[str, Any]:
        """Plain data for a checkpoint or ONNX metadata (infinities as None)."""
        return {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ConformalSets:
        ai, real = state["ai_min_p"], state["real_max_p"]
        return cls(
            float(state["alpha"]),
            -math.inf if ai is None else float(ai),
            math.inf if real is None else float(real),
            int(state["n_ai"]),
            int(state["n_real"]),
        )


def class_quantile(scores: np.ndarray, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest score, or +inf when n is too small for that level."""
    n = len(scores)
    rank = math.ceil((n + 1) * (1 - alpha))
    return math.inf if rank > n else float(np.sort(scores)[rank - 1])


def fit_conformal(labels: np.ndarray, p_ai: np.ndarray, alpha: float = DEFAULT_ALPHA) -> ConformalSets:
    """Class-conditional split conformal sets from calibration labels (1 AI, 0 Real) and P(AI)."""
    check_value(AbstainSettings, "alpha", alpha, "abstain.")
    labels, p_ai = np.asarray(labels).astype(int), np.asarray(p_ai, dtype=np.float64)
    q_ai = class_quantile(1.0 - p_ai[labels == 1], alpha)  # an AI image's score: 1 - P(AI)
    q_real = class_quantile(p_ai[labels == 0], alpha)  # a real image's score: 1 - P(Real) = P(AI)
    return ConformalSets(alpha, 1.0 - q_ai, q_real, int((labels == 1).sum()), int((labels == 0).sum()))
