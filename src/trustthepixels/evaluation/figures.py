"""Evaluation figures as matplotlib figures: saved as PNG and added to TensorBoard by the caller."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve


def confusion_matrix_figure(labels: np.ndarray, probs: np.ndarray, threshold: float, names=("Real", "AI")) -> Figure:
    predicted = (probs > threshold).astype(int)
    matrix = np.array([[np.sum((labels == t) & (predicted == p)) for p in (0, 1)] for t in (0, 1)])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(matrix, cmap="Blues")
    for t in (0, 1):
        for p in (0, 1):
            dark = matrix[t, p] > matrix.max() / 2
            ax.text(p, t, str(matrix[t, p]), ha="center", va="center", color="white" if dark else "black", fontsize=14)
    ax.set_xticks([0, 1], names)
    ax.set_yticks([0, 1], names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix (P(AI) > {threshold:.3f})")
    fig.tight_layout()
    return fig


def roc_figure(labels: np.ndarray, probs: np.ndarray, auroc: float) -> Figure:
    fpr, tpr, _ = roc_curve(labels, probs)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(fpr, tpr, label=f"AUROC {auroc:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set_xlabel("false positive rate (real called AI)")
    ax.set_ylabel("true positive rate (AI caught)")
    ax.set_title("ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def pr_figure(labels: np.ndarray, probs: np.ndarray, ap: float) -> Figure:
    precision, recall, _ = precision_recall_curve(labels, probs)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(recall, precision, label=f"AP {ap:.3f}")
    ax.axhline(labels.mean(), ls="--", color="grey", lw=1, label="chance")
    ax.set_xlabel("recall (AI)")
    ax.set_ylabel("precision (AI)")
    ax.set_title("Precision-recall")
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def reliability_figure(labels: np.ndarray, logits: np.ndarray, temperature: float, bins: int = 10) -> Figure:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect")
    for name, t in (("raw", 1.0), (f"T = {temperature:.2f}", temperature)):
        observed, predicted = calibration_curve(labels, 1 / (1 + np.exp(-logits / t)), n_bins=bins, strategy="uniform")
        ax.plot(predicted, observed, "o-", label=name)
    ax.set_xlabel("mean P(AI) in bin")
    ax.set_ylabel("share of AI images in bin")
    ax.set_title("Reliability")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def histogram_figure(labels: np.ndarray, probs: np.ndarray, threshold: float, names=("Real", "AI")) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 4))
    bins = np.linspace(0, 1, 26)
    for label, name in enumerate(names):
        ax.hist(probs[labels == label], bins=bins, alpha=0.6, label=name)
    ax.axvline(threshold, color="black", lw=1, ls="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel("P(AI)")
    ax.set_ylabel("images")
    ax.set_title("P(AI) per class")
    ax.legend()
    fig.tight_layout()
    return fig


def robustness_figure(rows: list[dict]) -> Figure:
    """AUROC and accuracy against perturbation strength, one panel per perturbation kind."""
    kinds = list(dict.fromkeys(r["perturbation"] for r in rows if r["perturbation"] != "none"))
    clean = next(r for r in rows if r["perturbation"] == "none")
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        chosen = [r for r in rows if r["perturbation"] == kind]
        x = ["clean"] + [r["strength"] for r in chosen]
        for metric in ("auroc", "acc_at_val_threshold"):
            ax.plot(x, [clean[metric]] + [r[metric] for r in chosen], "o-", label=metric)
        ax.set_ylim(0, 1.02)
        ax.axhline(0.5, color="grey", lw=1, ls=":")
        ax.set_title(kind)
        ax.set_xlabel({"jpeg": "quality", "blur": "sigma", "downscale": "factor"}.get(kind, "strength"))
        ax.legend(loc="lower left")
    fig.tight_layout()
    return fig
