"""A stratified train/val/test split that depends only on the seed and each file's relative path.

Within each class the files are ordered by a keyed hash of their relative path, then cut at the requested
fractions. The result does not depend on the order a filesystem lists files in, nor on where the dataset
folder lives, and the same seed reproduces it on any machine.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from pathlib import Path

from trustthepixels.data.scan import LABELS, Sample

SPLITS = ("train", "val", "test")


def _rank_key(seed: int, relpath: str) -> str:
    return hashlib.sha256(f"{seed}\0{relpath}".encode()).hexdigest()


def split_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """How many of `n` files of one class go to train, val and test; val and test get at least one."""
    train_f, val_f, test_f = fractions
    n_val = max(1, round(n * val_f)) if val_f > 0 else 0
    n_test = max(1, round(n * test_f)) if test_f > 0 else 0
    n_train = n - n_val - n_test
    if n_train < 1 and train_f > 0:
        raise ValueError(f"{n} images in a class are too few for the split {list(fractions)}")
    return n_train, n_val, n_test


def stratified_split(samples: Sequence[Sample], fractions: Sequence[float], seed: int) -> dict[str, list[Sample]]:
    """Assign every sample to one of `SPLITS`, keeping the class balance of each part."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"data.split must be three non-negative fractions summing to 1, got {list(fractions)}")
    by_class: dict[str, list[list[Sample]]] = {name: [] for name in SPLITS}
    for label in LABELS:
        ranked = sorted((s for s in samples if s.label == label), key=lambda s: _rank_key(seed, s.relpath))
        n_train, n_val, _ = split_counts(len(ranked), fractions)
        by_class["train"].append(ranked[:n_train])
        by_class["val"].append(ranked[n_train : n_train + n_val])
        by_class["test"].append(ranked[n_train + n_val :])
    return {name: _interleave(groups) for name, groups in by_class.items()}


def _interleave(groups: list[list[Sample]]) -> list[Sample]:
    """Merge per-class lists so that every prefix keeps the class ratio: a limited or single-batch
    evaluation (limit_val_batches, fast_dev_run) still sees both classes, and AUROC stays defined."""
    keyed = [((i + 0.5) / len(group), s.label, s) for group in groups for i, s in enumerate(group)]
    return [s for *_, s in sorted(keyed, key=lambda item: item[:2])]


def write_split_csv(parts: dict[str, list[Sample]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "class", "split"])
        for name in SPLITS:
            for s in sorted(parts[name], key=lambda s: s.relpath):
                writer.writerow([s.relpath, s.label, LABELS[s.label], name])
