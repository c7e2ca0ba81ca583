"""95% intervals for every metric computed from a sample of images.

- Accuracies (overall, on real, on AI images) are binomial proportions: exact Clopper-Pearson intervals
  (`scipy.stats.binomtest`).
- Everything else (AUROC, AP, balanced accuracy, F1, ECE, log loss) gets a stratified percentile bootstrap:
  `scipy.stats.bootstrap` resamples the real and the AI images separately (each class keeps its count, as in
  the split), `n_resamples` times (2000 by default), seeded.

The bootstrap recomputes the metrics thousands of times, so it uses `resample_metrics`, a vectorised NumPy
version of `metrics.core_metrics` (the same definitions; tests hold the two equal to 1e-9).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from trustthepixels.metric_registry import AT_THRESHOLD, BINOMIAL, BOOTSTRAPPED, BOOTSTRAPPED_DECISIONS, METRICS
from trustthepixels.metrics.core import binary_metrics, sigmoid

CONFIDENCE = 0.95


def mann_whitney_auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos * n_neg), ties counting one half."""
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's definition: sum over thresholds of (recall step) x precision, tied scores as one step."""
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_pos = np.cumsum(labels)[last_of_tie]
    precision = true_pos / (last_of_tie + 1)
    recall_steps = np.diff(np.r_[0, true_pos]) / labels.sum()
    return float((recall_steps * precision).sum())


def _ece(labels: np.ndarray, probs: np.ndarray, bins: int) -> float:
    """torchmetrics' binary calibration error (L1, uniform bins on P(AI), right-closed)."""
    index = np.clip(np.ceil(probs * bins).astype(int) - 1, 0, bins - 1)
    confidence = np.bincount(index, weights=probs, minlength=bins)
    accuracy = np.bincount(index, weights=labels, minlength=bins)
    return float(np.abs(accuracy - confidence).sum() / len(probs))


def resample_metrics(labels: np.ndarray, logits: np.ndarray, threshold: float = 0.5, bins: int = 15) -> np.ndarray:
    """`BOOTSTRAPPED` metrics of one (re)sample, in that order."""
    labels = np.asarray(labels, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    probs = sigmoid(logits)
    pos, neg = probs[labels == 1], probs[labels == 0]
    predicted = probs > threshold
    recall_ai, recall_real = predicted[labels == 1].mean(), (~predicted[labels == 0]).mean()
    true_pos = (predicted & (labels == 1)).sum()
    f1 = 2 * true_pos / (predicted.sum() + labels.sum()) if predicted.sum() + labels.sum() else 0.0
    # log loss in the numerically stable form torch uses: max(z, 0) - z * y + log(1 + exp(-|z|))
    loss = np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits))))
    values = {
        "auroc": mann_whitney_auroc(pos, neg),
        "ap": _average_precision(labels, probs),
        "balanced_acc": (recall_ai + recall_real) / 2,
        "f1": f1,
        "ece": _ece(labels, probs, bins),
        "loss": loss,
    }
    return np.array([values[name] for name in BOOTSTRAPPED])


def clopper_pearson(successes: int, trials: int) -> tuple[float, float]:
    if trials == 0:
        return math.nan, math.nan
    interval = stats.binomtest(int(successes), int(trials)).proportion_ci(CONFIDENCE, method="exact")
    return float(interval.low), float(interval.high)


def metric_intervals(
    labels: np.ndarray,
    logits: np.ndarray,
    *,
    threshold: float = 0.5,
    suffix: str = "",
    n_resamples: int = 2000,
    seed: int = 0,
    bins: int = 15,
    decisions_only: bool = False,
) -> dict[str, float]:
    """`{metric}_lo` and `{metric}_hi` for the metrics of `core_metrics` (with `suffix` for the decisions at
    `threshold`; `decisions_only`: only those, not the threshold-free ones). NaN where a class is missing."""
    labels = np.asarray(labels).astype(int)
    logits = np.asarray(logits, dtype=np.float64)
    predicted = sigmoid(logits) > threshold
    out: dict[str, float] = {}
    for name, label in BINOMIAL.items():
        chosen = np.ones(len(labels), bool) if label is None else labels == label
        correct = int((predicted[chosen] == labels[chosen].astype(bool)).sum())
        out[f"{name}{suffix}_lo"], out[f"{name}{suffix}_hi"] = clopper_pearson(correct, int(chosen.sum()))
    names = BOOTSTRAPPED if not decisions_only else BOOTSTRAPPED_DECISIONS
    keys = {n: f"{n}{suffix}" if n in BOOTSTRAPPED_DECISIONS else n for n in names}
    # Sorted: the resamples then depend on the scores alone, not on the order the images came in, so train.py
    # (dataset order) and eval.py or a predictions file (file order) give the same interval for the same images.
    pos, neg = np.sort(logits[labels == 1]), np.sort(logits[labels == 0])
    if len(pos) < 2 or len(neg) < 2:  # nothing to resample within a class
        return out | {f"{key}{end}": math.nan for key in keys.values() for end in ("_lo", "_hi")}

    def statistic(pos_sample: np.ndarray, neg_sample: np.ndarray) -> np.ndarray:
        sample_labels = np.r_[np.ones(len(pos_sample)), np.zeros(len(neg_sample))]
        return resample_metrics(sample_labels, np.r_[pos_sample, neg_sample], threshold, bins)

    result = stats.bootstrap(
        (pos, neg),
        statistic,
        n_resamples=n_resamples,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=False,
        random_state=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval
    for i, name in enumerate(BOOTSTRAPPED):
        if name in keys:
            out[f"{keys[name]}_lo"], out[f"{keys[name]}_hi"] = float(low[i]), float(high[i])
    if "auroc" in keys:
        out |= _separated_auroc_interval(pos, neg)
    return out


def _separated_auroc_interval(pos: np.ndarray, neg: np.ndarray) -> dict[str, float]:
    """When every AI image outscores every real one (or none does), every bootstrap resample does too and the
    percentile interval collapses to [1, 1]: it says nothing. An exact bound instead: pair min(m, n) AI and real
    images disjointly; each pair is an independent trial that is ordered right with probability AUROC, and all
    were, so Clopper-Pearson's interval for N successes in N trials bounds the AUROC (conservative: it uses only
    N of the m * n pairs). `auroc_separated` (1.0) marks it, for the report's warning."""
    if pos.min() > neg.max():
        n = min(len(pos), len(neg))
        return {"auroc_lo": clopper_pearson(n, n)[0], "auroc_hi": 1.0, "auroc_separated": 1.0}
    if pos.max() < neg.min():
        n = min(len(pos), len(neg))
        return {"auroc_lo": 0.0, "auroc_hi": clopper_pearson(0, n)[1], "auroc_separated": 1.0}
    return {}


def measured(
    labels: np.ndarray,
    logits: np.ndarray,
    *,
    threshold: float = 0.5,
    temperature: float = 1.0,
    bins: int = 15,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Every metric of `metrics.binary_metrics` with its 95% interval (`auroc`, `auroc_lo`, `auroc_hi`, ...): the
    one way eval.py, calibrate.py and benchmark.py measure a set of images."""
    sampling = {"n_resamples": n_resamples, "seed": seed, "bins": bins}
    out = binary_metrics(labels, logits, threshold, temperature, bins) | metric_intervals(labels, logits, **sampling)
    out |= metric_intervals(labels, logits, threshold=threshold, suffix=AT_THRESHOLD, decisions_only=True, **sampling)
    scaled = metric_intervals(labels, np.asarray(logits) / temperature, **sampling)
    for m in METRICS:
        if m.temperature_scaled:
            base = m.key.removesuffix("_temperature_scaled")
            out[f"{m.key}_lo"], out[f"{m.key}_hi"] = scaled[f"{base}_lo"], scaled[f"{base}_hi"]
    return out


def too_small_to_rank(images: int, low: float, high: float, separated: bool = False) -> str | None:
    """The sentence a report owes its reader when an AUROC interval is wider than 0.1, or when the images are
    perfectly separated (the bootstrap cannot measure that AUROC's uncertainty at all)."""
    width = high - low
    if separated:
        return (
            f"All {images} images are perfectly separated: resampling them cannot show how uncertain this AUROC is, "
            f"so its interval [{low:.3f}, {high:.3f}] is an exact binomial bound. Too few, or too easy, images to "
            "rank models on: compare on a larger or harder set."
        )
    if not width > 0.1:
        return None
    return (
        f"With {images} images the AUROC's 95% interval is {width:.2f} wide: too wide to rank models on this set. "
        f"An interval shrinks as 1/sqrt(n): about {4 * images} images (4x) would halve it."
    )
