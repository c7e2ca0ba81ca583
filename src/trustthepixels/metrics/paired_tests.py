"""Is one model's AUROC on the same images higher than another's? Paired tests of the difference.

- `delong`: DeLong, DeLong & Clarke-Pearson (1988), in Sun & Xu's (2014) fast form, checked against pROC's
  published example (tests/test_statistics.py).
- `paired_bootstrap`: both models on the same stratified resamples.
- `mcnemar`: the exact test on the accuracy at each model's own threshold.
- `holm`: Holm's (1979) step-down adjustment when several pairs are judged at once.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from trustthepixels.errors import UserError
from trustthepixels.metrics.intervals import mann_whitney_auroc

ALPHA = 0.05


def delong(labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict[str, float]:
    """DeLong's test of AUROC(a) - AUROC(b) on the same images: the difference, its standard error, a 95%
    interval, z and the two-sided p-value. Ties count one half, as in the AUROC itself."""
    labels = np.asarray(labels)
    scores = np.vstack([scores_a, scores_b]).astype(np.float64)
    pos, neg = scores[:, labels == 1], scores[:, labels == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise UserError(f"{m} AI and {n} real images: DeLong's test needs at least two of each")
    ranks_pos = stats.rankdata(pos, axis=1)
    ranks_neg = stats.rankdata(neg, axis=1)
    ranks_all = stats.rankdata(np.hstack([pos, neg]), axis=1)
    aucs = (ranks_all[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    v_pos = (ranks_all[:, :m] - ranks_pos) / n  # structural components of the AI images
    v_neg = 1.0 - (ranks_all[:, m:] - ranks_neg) / m  # and of the real ones
    covariance = np.cov(v_pos) / m + np.cov(v_neg) / n
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = aucs[0] - aucs[1]
    se = math.sqrt(max(variance, 0.0))
    z = difference / se if se > 0 else (0.0 if difference == 0 else math.copysign(math.inf, difference))
    half = stats.norm.ppf(1 - ALPHA / 2) * se
    return {
        "auroc_a": float(aucs[0]),
        "auroc_b": float(aucs[1]),
        "difference": float(difference),
        "se": se,
        "low": float(difference - half),
        "high": float(difference + half),
        "z": float(z),
        "p": float(2 * stats.norm.sf(abs(z))),
    }


def paired_bootstrap(
    labels: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, n_resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """The AUROC difference over a stratified bootstrap of the images, both models on the same resample:
    a percentile 95% interval and the two-sided p-value of "no difference": twice the smaller tail, counted as
    (k + 1) / (n + 1) so that it is never 0 (with 2000 resamples it is at least 0.001)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    differences = np.empty(n_resamples)
    for i in range(n_resamples):
        p, q = rng.choice(pos, len(pos)), rng.choice(neg, len(neg))
        differences[i] = mann_whitney_auroc(scores_a[p], scores_a[q]) - mann_whitney_auroc(scores_b[p], scores_b[q])
    low, high = np.percentile(differences, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    tail = min((differences <= 0).sum(), (differences >= 0).sum())
    return {"low": float(low), "high": float(high), "p": float(min(1.0, 2 * (tail + 1) / (n_resamples + 1)))}


def mcnemar(labels: np.ndarray, predicted_a: np.ndarray, predicted_b: np.ndarray) -> dict[str, float]:
    """McNemar's exact test: among images exactly one model gets right, is either model right more often?
    (A binomial test of the discordant pairs, as statsmodels' `mcnemar(exact=True)`.)"""
    right_a, right_b = predicted_a == labels, predicted_b == labels
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return {"only_a_right": only_a, "only_b_right": only_b, "p": float(p)}


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment: judging several pairs at once, the chance of any false "better" stays at
    most ALPHA (Holm 1979). The k-th smallest p is multiplied by (m - k + 1), kept monotone, capped at 1."""
    order = np.argsort(pvalues, kind="stable")
    adjusted = np.empty(len(pvalues))
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted.tolist()
