"""The metrics of a set of predictions: one code path for every number training, `eval.py` and sweeps report.

`core_metrics` is what training logs for val and test (from all predictions of the split, gathered across
processes); `binary_metrics` adds what `eval.py` knows on top (the calibrated threshold and temperature).
Both are computed here, from (labels, logits), with torchmetrics and scikit-learn.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import expit
from sklearn.metrics import roc_curve
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_average_precision,
    binary_calibration_error,
    binary_f1_score,
    binary_recall,
    binary_specificity,
)

TEMPERATURE_BOUNDS = (0.05, 20.0)


class CalibrationError(ValueError):
    """Threshold or temperature cannot be fitted on these images (the message says why)."""


log = logging.getLogger(__name__)


def _t(values: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=dtype)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """P(AI) from logits, in float64: the one sigmoid of every number computed from saved logits."""
    return expit(np.asarray(logits, dtype=np.float64))


def threshold_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float, suffix: str = "") -> dict[str, float]:
    """Decisions "AI if P(AI) > threshold": accuracy, balanced accuracy, F1, and accuracy on each class."""
    y, p = _t(labels, torch.long), _t(probs)
    # torchmetrics decides "positive if p > threshold" for float predictions, as this project does everywhere.
    recall_ai = binary_recall(p, y, threshold=threshold) if (y == 1).any() else torch.tensor(math.nan)
    recall_real = binary_specificity(p, y, threshold=threshold) if (y == 0).any() else torch.tensor(math.nan)
    metrics = {
        "acc": binary_accuracy(p, y, threshold=threshold),
        "balanced_acc": (recall_ai + recall_real) / 2,
        "f1": binary_f1_score(p, y, threshold=threshold),
        "acc_real": recall_real,
        "acc_ai": recall_ai,
    }
    return {f"{k}{suffix}": float(v) for k, v in metrics.items()}


def core_metrics(labels: np.ndarray, logits: np.ndarray, bins: int = 15) -> dict[str, float]:
    """Threshold-free metrics (NaN when a class is missing), log loss, ECE, and the decisions at 0.5."""
    labels, logits = np.asarray(labels), np.asarray(logits, dtype=np.float64)
    y, p = _t(labels, torch.long), _t(sigmoid(logits))
    both = 0 < labels.sum() < len(labels)
    metrics = {
        "images": float(len(labels)),
        "auroc": float(binary_auroc(p, y)) if both else math.nan,
        "ap": float(binary_average_precision(p, y)) if both else math.nan,
        "loss": float(torch.nn.functional.binary_cross_entropy_with_logits(_t(logits), _t(labels))),
        "ece": float(binary_calibration_error(p, y, n_bins=bins)),
    }
    return metrics | threshold_metrics(labels, sigmoid(logits), 0.5)


def binary_metrics(
    labels: np.ndarray, logits: np.ndarray, threshold: float = 0.5, temperature: float = 1.0, bins: int = 15
) -> dict[str, float]:
    """`core_metrics`, the decisions at `threshold` (suffix `_at_threshold`) and the ECE after temperature
    scaling (`temperature` changes nothing else: it keeps the ranking and the decision at 0.5's logit, 0)."""
    logits = np.asarray(logits, dtype=np.float64)
    metrics = core_metrics(labels, logits, bins)
    metrics |= threshold_metrics(labels, sigmoid(logits), float(threshold), "_at_threshold")
    scaled = _t(sigmoid(logits / temperature))
    metrics["ece_temperature_scaled"] = float(binary_calibration_error(scaled, _t(labels, torch.long), n_bins=bins))
    return metrics


def _check_both_classes(labels: np.ndarray, what: str) -> None:
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=2)
    if counts.min() == 0:
        raise CalibrationError(f"{counts[0]} real and {counts[1]} AI images: {what} needs both classes")


def choose_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The P(AI) threshold that maximises balanced accuracy (Youden's J) on these (calibration) images.

    From scikit-learn's ROC curve (linear memory): each of its operating points "P(AI) >= score" is the rule
    "P(AI) > threshold" with the threshold halfway to the next lower distinct score (0 below the lowest,
    1 for "nothing is AI"). Ties go to the candidate nearest 0.5.
    """
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    _check_both_classes(labels, "choosing a threshold")
    fpr, tpr, scores = roc_curve(labels, probs, drop_intermediate=False)
    distinct = scores[1:]  # scores[0] is +inf: nothing called AI
    candidates = np.concatenate([[1.0], (distinct[:-1] + distinct[1:]) / 2, [0.0]])
    balanced = (tpr + 1 - fpr) / 2
    best = np.flatnonzero(balanced == balanced.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


@dataclass(frozen=True)
class Temperature:
    value: float  # 1.0 when not fitted
    fitted: bool
    note: str = ""


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> Temperature:
    """The temperature T in `TEMPERATURE_BOUNDS` minimising the log loss of sigmoid(logit / T) on the calibration
    images, or T = 1 with the reason it cannot be fitted.

    On perfectly separated images the loss keeps falling as T -> 0 (every answer made certain): that says
    nothing about new images, so no temperature is fitted then."""
    labels, logits = np.asarray(labels), np.asarray(logits, dtype=np.float64)
    try:
        _check_both_classes(labels, "temperature scaling")
    except CalibrationError as err:
        return Temperature(1.0, False, str(err))
    if logits[labels == 0].max() < logits[labels == 1].min():
        return Temperature(1.0, False, "the images are perfectly separated: a temperature fitted on them would go to 0")
    y, z = _t(labels), _t(logits)

    def loss(log_t: float) -> float:
        return float(torch.nn.functional.binary_cross_entropy_with_logits(z / math.exp(log_t), y))

    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    value = math.exp(result.x)
    at_bound = min(abs(result.x - low), abs(result.x - high)) < 1e-3
    note = f"at the bound of {TEMPERATURE_BOUNDS}: the calibration set is too small or too easy" if at_bound else ""
    return Temperature(value, True, note)
