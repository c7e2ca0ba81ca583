"""The pairs of an aligned set (`prepare_data.py source=aligned`): its `manifest.csv` names each photo under `Real/`
beside its reconstruction under `AI/`, so that the split keeps them together and training can augment them alike."""

from __future__ import annotations

import csv
from pathlib import Path

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("real", "ai", "source_file", "autoencoder", "psnr_db")


def read_pairs(root: Path) -> list[tuple[str, str]]:
    """(Real relpath, AI relpath) of each pair in `root/manifest.csv`, relative to `root`; none without a manifest."""
    manifest = Path(root) / MANIFEST
    if not manifest.is_file():
        return []
    with open(manifest, newline="") as f:
        return [(row["real"], row["ai"]) for row in csv.DictReader(f)]
