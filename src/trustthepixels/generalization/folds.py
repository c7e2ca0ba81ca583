"""`benchmark.py folds=k`: one matrix row from k cross-validation runs.

An in-source cell pools the k out-of-fold test parts: every image of the source, each scored by the one model that
never trained on it and decided by that model's own rule, so the cell has the whole source behind it instead of
one test split (80 images for real-vs-ai: intervals 0.2 wide). AUROC and its interval come from the pooled logits
(the usual out-of-fold estimate; the k models' scales differ a little), accuracy and the abstention rates from the
pooled verdicts, with exact intervals.

An out-of-source cell is scored by each of the k models on the same images: each number, and each bound of its
interval, is the mean over the k models (the typical model's figure, not that of an ensemble).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from trustthepixels.detector.predictions import Prediction
from trustthepixels.metrics.core import core_metrics
from trustthepixels.metrics.intervals import clopper_pearson, metric_intervals
from trustthepixels.metrics.selective import abstention_rates


def pool_folds(
    fold_cells: Sequence[dict[str, dict[str, Any]]],
    fold_predictions: Sequence[Sequence[Prediction]],
    trained: Sequence[str],
    folds: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """The row's cells from each fold's cells and predictions (each fold's `tested_on` context names the cell)."""
    cells = {}
    for name in fold_cells[0]:
        if name in trained:
            pooled = [p for fold in fold_predictions for p in fold if p.context.get("tested_on") == name]
            cells[name] = _pooled_cell(pooled, folds, seed, with_abstention="coverage" in fold_cells[0][name])
        else:
            cells[name] = _mean_cell([fold[name] for fold in fold_cells])
    return cells


def _pooled_cell(predictions: list[Prediction], folds: int, seed: int, with_abstention: bool) -> dict[str, Any]:
    labels = np.array([p.label for p in predictions], dtype=int)
    logits = np.array([p.logit for p in predictions], dtype=np.float64)
    right = int(sum((p.p_ai > p.threshold) == bool(p.label) for p in predictions))
    bands = metric_intervals(labels, logits, seed=seed)
    cell = {
        "auroc": core_metrics(labels, logits)["auroc"],
        "auroc_lo": bands["auroc_lo"],
        "auroc_hi": bands["auroc_hi"],
        "acc": right / len(labels),
        "images": len(labels),
        "in_source": True,
        "test_set": f"{folds}-fold out-of-fold (every image)",
    }
    cell["acc_lo"], cell["acc_hi"] = clopper_pearson(right, len(labels))
    if with_abstention:
        rates = abstention_rates(labels, np.array([p.verdict for p in predictions]))
        cell |= {k: v for k, v in rates.items() if k not in ("answered", "images")}
    return cell


def _mean_cell(cells: list[dict[str, Any]]) -> dict[str, Any]:
    mean = dict(cells[0])
    for key, value in cells[0].items():
        if isinstance(value, float | int) and not isinstance(value, bool) and key != "images":
            mean[key] = float(np.mean([c[key] for c in cells]))
    mean["test_set"] = f"{cells[0]['test_set']} (mean of {len(cells)} fold models)"
    return mean
