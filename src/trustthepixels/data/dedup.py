"""Exact and near-duplicate groups from file fingerprints.

Two images are near-duplicates when both their perceptual hash (pHash) and difference hash (dHash) are within
the given Hamming distances; groups are the connected components of that relation (scipy's DisjointSet). All pairs are
compared with vectorised XOR + popcount: about a second for 8000 images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.cluster.hierarchy import DisjointSet

from trustthepixels.data.fingerprint import FileRecord

DEFAULT_PHASH_DISTANCE = 4
DEFAULT_DHASH_DISTANCE = 6


def _as_uint64(hex_hashes: Sequence[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)


def _near_pairs(phash: np.ndarray, dhash: np.ndarray, max_phash: int, max_dhash: int, chunk: int = 1024):
    n = len(phash)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        dp = np.bitwise_count(phash[start:stop, None] ^ phash[None, :])
        dd = np.bitwise_count(dhash[start:stop, None] ^ dhash[None, :])
        rows, cols = np.nonzero((dp <= max_phash) & (dd <= max_dhash))
        for i, j in zip(rows + start, cols, strict=True):
            if i < j:
                yield int(i), int(j)


def duplicate_groups(
    records: Sequence[FileRecord],
    max_phash: int = DEFAULT_PHASH_DISTANCE,
    max_dhash: int = DEFAULT_DHASH_DISTANCE,
) -> list[list[str]]:
    """Groups (2+ relative paths, sorted) of identical files or near-identical images among usable `records`."""
    usable = [r for r in records if r.error is None]
    groups = DisjointSet(range(len(usable)))
    by_sha: dict[str, int] = {}
    for i, record in enumerate(usable):
        groups.merge(i, by_sha.setdefault(record.sha256, i))
    if usable:
        phash = _as_uint64([r.phash for r in usable])
        dhash = _as_uint64([r.dhash for r in usable])
        for i, j in _near_pairs(phash, dhash, max_phash, max_dhash):
            groups.merge(i, j)
    return sorted(sorted(usable[i].relpath for i in subset) for subset in groups.subsets() if len(subset) > 1)
