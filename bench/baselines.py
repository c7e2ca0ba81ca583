"""The methods the project replaced, kept as the baselines `bench/` times it against and the oracles tests hold it
to: they are not part of the package.

- `original_reduction`: the original reduction script, which `prepare_data.py source=hf` must reproduce exactly
  (file names and pixels). It reads each row's label through `train[idx]["label"]`, which decodes all 152,710
  images of the full dataset: that is why it is slow.
- `all_pairs`: near-duplicate search comparing every pair of hashes, quadratic in n; `data.audit.dedup.near_pairs`
  finds exactly the same pairs by multi-index hashing.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np


def original_reduction(train, out: Path, per_class: int = 4000, seed: int = 42) -> None:
    """`train` is the loaded `datasets` split; writes `out/AI/ai_XXXX.jpg` and `out/Real/real_XXXX.jpg`."""
    label_names = train.features["label"].names
    ai_label = label_names.index("AiArtData")
    real_label = label_names.index("RealArt")
    ai_indices, real_indices = [], []
    for idx in range(len(train)):
        label = train[idx]["label"]
        if label == ai_label:
            ai_indices.append(idx)
        elif label == real_label:
            real_indices.append(idx)
    random.seed(seed)
    ai_sample = random.sample(ai_indices, per_class)
    real_sample = random.sample(real_indices, per_class)
    os.makedirs(Path(out) / "AI", exist_ok=True)
    os.makedirs(Path(out) / "Real", exist_ok=True)
    for i, idx in enumerate(ai_sample):
        img = train[idx]["image"]
        if img.mode != "RGB":
            img = img.convert("RGB")
        img.save(Path(out) / "AI" / f"ai_{i:04d}.jpg")
    for i, idx in enumerate(real_sample):
        img = train[idx]["image"]
        if img.mode != "RGB":
            img = img.convert("RGB")
        img.save(Path(out) / "Real" / f"real_{i:04d}.jpg")


def all_pairs(phash: np.ndarray, dhash: np.ndarray, max_phash: int, max_dhash: int, chunk: int = 1024) -> np.ndarray:
    """Every (i, j), i < j, within both Hamming distances, comparing all pairs (in chunks of rows)."""
    n, found = len(phash), []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        dp = np.bitwise_count(phash[start:stop, None] ^ phash[None, :])
        dd = np.bitwise_count(dhash[start:stop, None] ^ dhash[None, :])
        rows, cols = np.nonzero((dp <= max_phash) & (dd <= max_dhash))
        rows += start
        found.append(np.stack([rows, cols], axis=1)[rows < cols])
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)
