"""Selective prediction: what answering only some images costs and gains.

Coverage is the share of images given a definite verdict (AI or Real; not `uncertain`, not `unfamiliar`), the
accuracy on those, and the confident-error rate: the share of all images given a wrong definite verdict, the
number a person relying on the verdicts meets. The risk-coverage curve (Geifman & El-Yaniv 2017) orders images
from most to least confident and gives the error rate among the first k at each coverage k / n; its area (AURC)
summarises how well confidence ranks errors last: lower is better, the error rate itself when confidence is
useless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trustthepixels.metrics.conformal import UNCERTAIN, UNFAMILIAR
from trustthepixels.metrics.intervals import clopper_pearson


def abstention_metrics(labels: np.ndarray, verdicts: np.ndarray) -> dict[str, float]:
    """Coverage, accuracy on answered images and the confident-error rate, with their counts for exact intervals."""
    labels = np.asarray(labels).astype(int)
    answered = ~np.isin(verdicts, [UNCERTAIN, UNFAMILIAR])
    right = answered & (verdicts == np.where(labels == 1, "AI", "Real"))
    n, n_answered = len(labels), int(answered.sum())
    return {
        "coverage": n_answered / n if n else math.nan,
        "accuracy_answered": int(right.sum()) / n_answered if n_answered else math.nan,
        "confident_errors": int((answered & ~right).sum()) / n if n else math.nan,
        "answered": n_answered,
        "answered_right": int(right.sum()),
        "images": n,
    }


def abstention_rates(labels: np.ndarray, verdicts: np.ndarray) -> dict[str, float]:
    """Coverage, accuracy on answered images and the confident-error rate, each with its exact (Clopper-Pearson)
    95% interval (`coverage_lo`, ...), and the share of images called unfamiliar: what every command reports."""
    verdicts = np.asarray(verdicts)
    counts = abstention_metrics(labels, verdicts)
    wrong = counts["answered"] - counts["answered_right"]
    out = {"answered": counts["answered"], "images": counts["images"]}
    for name, hits, trials in (
        ("coverage", counts["answered"], counts["images"]),
        ("accuracy_answered", counts["answered_right"], counts["answered"]),
        ("confident_errors", wrong, counts["images"]),
    ):
        out[name] = counts[name]
        out[f"{name}_lo"], out[f"{name}_hi"] = clopper_pearson(hits, trials)
    out["unfamiliar"] = float(np.mean(verdicts == UNFAMILIAR)) if len(verdicts) else math.nan
    return out


@dataclass(frozen=True)
class RiskCoverage:
    coverage: np.ndarray  # k / n for k = 1..n
    risk: np.ndarray  # error rate among the k most confident images
    aurc: float  # the mean of `risk`: the area under the curve


def risk_coverage(
    labels: np.ndarray,
    logits: np.ndarray,
    threshold: float,
    familiarity: np.ndarray | None = None,
    familiar_min: float | None = None,
) -> RiskCoverage:
    """The curve of the threshold's verdicts ordered by confidence: the distance of the logit from the threshold's,
    and, with a familiarity cutoff, every familiar image before every unfamiliar one (ties keep file order)."""
    labels, logits = np.asarray(labels).astype(int), np.asarray(logits, dtype=np.float64)
    n = len(labels)
    if n == 0:
        return RiskCoverage(np.zeros(0), np.zeros(0), math.nan)
    # The threshold's logit; 0 and 1 are the ends (every image AI, every image Real), not logit 0.
    cut = -math.inf if threshold <= 0 else math.inf if threshold >= 1 else math.log(threshold / (1 - threshold))
    wrong = (logits > cut).astype(int) != labels
    margin = np.abs(logits - cut)
    keys = [-margin]
    if familiarity is not None and familiar_min is not None:
        keys.append(np.nan_to_num(np.asarray(familiarity, dtype=np.float64), nan=1.0) < familiar_min)
    order = np.lexsort(keys)  # the last key sorts first: familiar before unfamiliar, then by confidence
    risk = np.cumsum(wrong[order]) / np.arange(1, n + 1)
    return RiskCoverage(np.arange(1, n + 1) / n, risk, float(risk.mean()))
