"""Evaluation figures as matplotlib figures: saved as PNG and added to TensorBoard by the caller."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from trustthepixels.metrics.core import sigmoid

ROC_AXES = {"xlabel": "false positive rate (real called AI)", "ylabel": "true positive rate (AI caught)"}


def new_figure(size: tuple[float, float], title: str, **axes: str) -> tuple[Figure, Axes]:
    """A figure with one titled, labelled axes (`axes`: xlabel, ylabel, ...), laid out tight when drawn."""
    fig, ax = plt.subplots(figsize=size, layout="tight")
    ax.set(title=title, **axes)
    return fig, ax


def confusion_matrix_figure(labels: np.ndarray, probs: np.ndarray, threshold: float, names=("Real", "AI")) -> Figure:
    predicted = (probs > threshold).astype(int)
    matrix = np.array([[np.sum((labels == t) & (predicted == p)) for p in (0, 1)] for t in (0, 1)])
    fig, ax = new_figure((4, 4), f"Confusion matrix (P(AI) > {threshold:.3f})", xlabel="predicted", ylabel="true")
    ax.imshow(matrix, cmap="Blues")
    for t in (0, 1):
        for p in (0, 1):
            dark = matrix[t, p] > matrix.max() / 2
            ax.text(p, t, str(matrix[t, p]), ha="center", va="center", color="white" if dark else "black", fontsize=14)
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    return fig


def roc_band(
    labels: np.ndarray, probs: np.ndarray, n_resamples: int = 2000, seed: int = 0, grid: int = 101
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pointwise 95% band of the ROC curve: true positive rates at fixed false positive rates over a
    stratified bootstrap of the images (each class resampled within itself)."""
    rng = np.random.default_rng(seed)
    fpr_grid = np.linspace(0, 1, grid)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    curves = np.empty((n_resamples, grid))
    for i in range(n_resamples):
        chosen = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        fpr, tpr, _ = roc_curve(labels[chosen], probs[chosen])
        curves[i] = np.interp(fpr_grid, fpr, tpr)
    low, high = np.percentile(curves, [2.5, 97.5], axis=0)
    return fpr_grid, low, high


def roc_figure(
    labels: np.ndarray, probs: np.ndarray, auroc: float, interval: tuple[float, float] | None = None, **band
) -> Figure:
    fpr, tpr, _ = roc_curve(labels, probs)
    fig, ax = new_figure((4.5, 4), "ROC", **ROC_AXES)
    grid, low, high = roc_band(labels, probs, **band)
    ax.fill_between(grid, low, high, alpha=0.25, label="95% band (bootstrap)")
    label = f"AUROC {auroc:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")
    ax.plot(fpr, tpr, label=label)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.legend(loc="lower right")
    return fig


def pr_figure(labels: np.ndarray, probs: np.ndarray, ap: float) -> Figure:
    precision, recall, _ = precision_recall_curve(labels, probs)
    fig, ax = new_figure((4.5, 4), "Precision-recall", xlabel="recall (AI)", ylabel="precision (AI)")
    ax.plot(recall, precision, label=f"AP {ap:.3f}")
    ax.axhline(labels.mean(), ls="--", color="grey", lw=1, label="chance")
    ax.legend(loc="lower left")
    return fig


def reliability_figure(labels: np.ndarray, logits: np.ndarray, temperature: float, bins: int) -> Figure:
    words = {"xlabel": "mean P(AI) in bin", "ylabel": "share of AI images in bin"}
    fig, ax = new_figure((4.5, 4), "Reliability", **words)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect")
    for name, t in (("raw", 1.0), (f"T = {temperature:.2f}", temperature)):
        observed, predicted = calibration_curve(labels, sigmoid(logits / t), n_bins=bins, strategy="uniform")
        ax.plot(predicted, observed, "o-", label=name)
    ax.legend(loc="upper left")
    return fig


def histogram_figure(labels: np.ndarray, probs: np.ndarray, threshold: float, names=("Real", "AI")) -> Figure:
    fig, ax = new_figure((5, 4), "P(AI) per class", xlabel="P(AI)", ylabel="images")
    bins = np.linspace(0, 1, 26)
    for label, name in enumerate(names):
        ax.hist(probs[labels == label], bins=bins, alpha=0.6, label=name)
    ax.axvline(threshold, color="black", lw=1, ls="--", label=f"threshold {threshold:.3f}")
    ax.legend()
    return fig


PERTURBATION_WORDS = {
    "jpeg": ("JPEG re-compression", "JPEG quality (lower is stronger)"),
    "blur": ("Gaussian blur", "blur sigma in pixels"),
    "downscale": ("Downscaling", "scale factor"),
}
METRIC_WORDS = {"auroc": "AUROC (threshold-free)", "acc_at_threshold": "accuracy at the threshold"}


def robustness_figures(rows: list[dict]) -> dict[str, Figure]:
    """One figure per perturbation kind: AUROC and accuracy against strength, each with its 95% interval."""
    kinds = list(dict.fromkeys(r["perturbation"] for r in rows if r["perturbation"] != "none"))
    clean = next(r for r in rows if r["perturbation"] == "none")
    out = {}
    for kind in kinds:
        title, axis = PERTURBATION_WORDS.get(kind, (kind, "strength"))
        fig, ax = new_figure((6, 4.5), f"{title}, applied to both classes", xlabel=axis, ylabel="score (95% interval)")
        chosen = [r for r in rows if r["perturbation"] == kind]
        points, x = [clean, *chosen], ["none"] + [r["strength"] for r in chosen]
        for metric, words in METRIC_WORDS.items():
            values = np.array([r[metric] for r in points])
            low = np.array([r.get(f"{metric}_lo", np.nan) for r in points])
            high = np.array([r.get(f"{metric}_hi", np.nan) for r in points])
            errors = np.nan_to_num(np.vstack([values - low, high - values]))  # 95% intervals as error bars
            ax.errorbar(x, values, yerr=errors, fmt="o-", capsize=3, label=words)
        ax.set_ylim(0, 1.02)
        ax.axhline(0.5, color="grey", lw=1, ls=":", label="chance")
        ax.legend(loc="lower left")
        out[f"robustness_{kind}.png"] = fig
    return out


def risk_coverage_figure(coverage: np.ndarray, risk: np.ndarray, aurc: float, operating: tuple[float, float]) -> Figure:
    """Error rate among the most confident images at each coverage, and where the verdict rule answers."""
    words = {
        "xlabel": "coverage (share of images answered, most confident first)",
        "ylabel": "error rate among answered",
    }
    fig, ax = new_figure((5, 4), "Risk-coverage", **words)
    ax.plot(coverage, risk, label=f"AURC {aurc:.3f}")
    if np.isfinite(operating).all():
        ax.scatter(*operating, color="C3", zorder=3, label=f"verdicts: coverage {operating[0]:.2f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left")
    return fig
