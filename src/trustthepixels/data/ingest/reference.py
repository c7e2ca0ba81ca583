"""The original reduction script, kept as the reference `prepare_data.py source=hf` must reproduce exactly.

Tests compare file names and pixels against it; `bench/bench_prepare.py` times it. It reads each row's label
through `train[idx]["label"]`, which decodes all 152,710 images of the full dataset: that is why it is slow.
"""

from __future__ import annotations

import os
import random
from pathlib import Path


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
