"""Could a classifier cheat? Cross-validated balanced accuracy (chance is 50% whatever the class balance) of
simple models that never look at image content as a deep model does: file metadata alone, and each image's
power spectrum (Durall et al., 2020)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from trustthepixels.data.audit.spectrum import azimuthal_spectrum
from trustthepixels.data.ingest.fingerprint import FileRecord

METADATA_FEATURES = ("width", "height", "aspect", "megapixels", "bytes_per_pixel", "is_jpeg", "is_png", "is_square")


def metadata_features(record: FileRecord) -> list[float]:
    w, h = record.width, record.height
    return [w, h, w / h, w * h / 1e6, record.bytes / (w * h), record.format == "JPEG", record.format == "PNG", w == h]


def _cross_validation(y: np.ndarray, folds: int, seed: int):
    from sklearn.model_selection import StratifiedKFold

    folds = max(2, min(folds, int(np.bincount(y).min())))
    return folds, StratifiedKFold(folds, shuffle=True, random_state=seed)


def _balanced_accuracy(model, x: np.ndarray, y: np.ndarray, cv) -> np.ndarray:
    from sklearn.model_selection import cross_val_score

    return cross_val_score(model, x, y, cv=cv, scoring="balanced_accuracy")


def _logistic_regression(**kwargs):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(**kwargs))


def metadata_baseline(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> dict[str, Any]:
    """A logistic regression on metadata alone, and each feature's best threshold."""
    from sklearn.tree import DecisionTreeClassifier

    folds, cv = _cross_validation(y, folds, seed)
    scores = _balanced_accuracy(_logistic_regression(max_iter=2000), x, y, cv)
    single = {
        name: float(_balanced_accuracy(DecisionTreeClassifier(max_depth=1), x[:, [i]], y, cv).mean())
        for i, name in enumerate(METADATA_FEATURES)
    }
    return {
        "model": "logistic regression on " + ", ".join(METADATA_FEATURES),
        "folds": folds,
        "balanced_accuracy": float(scores.mean()),
        "balanced_accuracy_std": float(scores.std()),
        "single_feature_accuracy": dict(sorted(single.items(), key=lambda kv: -kv[1])),
    }


def spectral_baseline(paths: list[Path], y: np.ndarray, folds: int, seed: int) -> dict[str, Any]:
    """A logistic regression on each image's azimuthally averaged power spectrum: what frequency content alone
    says about the class."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # numpy's FFT releases the GIL
        x = np.array(list(pool.map(azimuthal_spectrum, paths)))
    folds, cv = _cross_validation(y, folds, seed)
    scores = _balanced_accuracy(_logistic_regression(max_iter=5000, C=0.1), x, y, cv)
    return {
        "model": f"logistic regression on the azimuthal power spectrum ({x.shape[1]} radial bins)",
        "folds": folds,
        "balanced_accuracy": float(scores.mean()),
        "balanced_accuracy_std": float(scores.std()),
    }
