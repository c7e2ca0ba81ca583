"""Threshold-free and thresholded metrics, a validation-chosen threshold, and temperature scaling."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_average_precision,
    binary_calibration_error,
    binary_f1_score,
)


def _t(values: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values), dtype=dtype)


def choose_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The P(AI) threshold that maximises balanced accuracy (Youden's J) on these, the validation, images.

    Candidates are the midpoints between consecutive distinct probabilities; the rule everywhere in the
    project (and in torchmetrics) is "AI if P(AI) > threshold". Ties go to the candidate nearest 0.5.
    """
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    values = np.unique(probs)
    candidates = np.concatenate([[0.0], (values[:-1] + values[1:]) / 2, [1.0]])
    predicted = probs[None, :] > candidates[:, None]
    balanced = 0.5 * (predicted[:, labels == 1].mean(axis=1) + (~predicted[:, labels == 0]).mean(axis=1))
    best = np.flatnonzero(balanced == balanced.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> float:
    """The temperature T minimising the log loss of sigmoid(logit / T) on the validation images."""
    y, z = _t(labels), _t(logits)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp())


def binary_metrics(
    labels: np.ndarray, logits: np.ndarray, threshold: float = 0.5, temperature: float = 1.0, bins: int = 15
) -> dict[str, float]:
    """Metrics of one set. `threshold` applies to P(AI); `temperature` only changes the calibrated ECE."""
    y = _t(labels, torch.long)
    p = _t(1.0 / (1.0 + np.exp(-np.asarray(logits))))
    p_cal = _t(1.0 / (1.0 + np.exp(-np.asarray(logits) / temperature)))
    metrics = {"images": len(y), "auroc": binary_auroc(p, y), "ap": binary_average_precision(p, y)}
    for name, t in (("", 0.5), ("_at_val_threshold", float(threshold))):
        pred = (p > t).long()
        metrics |= {
            f"acc{name}": binary_accuracy(p, y, threshold=t),
            f"balanced_acc{name}": 0.5 * ((pred[y == 1] == 1).double().mean() + (pred[y == 0] == 0).double().mean()),
            f"f1{name}": binary_f1_score(p, y, threshold=t),
            f"acc_real{name}": (pred[y == 0] == 0).double().mean(),
            f"acc_ai{name}": (pred[y == 1] == 1).double().mean(),
        }
    metrics["ece"] = binary_calibration_error(p, y, n_bins=bins)
    metrics["ece_temperature_scaled"] = binary_calibration_error(p_cal, y, n_bins=bins)
    return {k: float(v) for k, v in metrics.items()}
