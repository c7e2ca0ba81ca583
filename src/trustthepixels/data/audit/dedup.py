"""Exact and near-duplicate groups from file fingerprints.

Two images are near-duplicates when both their perceptual hash (pHash) and difference hash (dHash) are within
the given Hamming distances; groups are the connected components of that relation (scipy's DisjointSet).

Finding the pairs is multi-index hashing (Norouzi, Punjani & Fleet, 2012): cut the 64-bit pHash into
`max_phash + 1` disjoint blocks. Two hashes within distance `max_phash` differ in at most that many bits, so by the
pigeonhole principle they agree exactly on at least one block: only images that share a block value are compared
(vectorised XOR + popcount on both hashes). That finds exactly the pairs the all-pairs comparison finds, with
about n^2 / 2^block_bits comparisons instead of n^2 (`bench/bench_dedup.py` times both).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.cluster.hierarchy import DisjointSet

from trustthepixels.data.ingest.fingerprint import FileRecord

DEFAULT_PHASH_DISTANCE = 4
DEFAULT_DHASH_DISTANCE = 6


def _as_uint64(hex_hashes: Sequence[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)


def _blocks(bits: int, parts: int) -> list[tuple[int, int]]:
    """(shift, width) of `parts` disjoint blocks covering `bits` bits, as even as possible."""
    widths = [bits // parts + (k < bits % parts) for k in range(parts)]
    shifts = np.cumsum([0, *widths[:-1]])
    return list(zip(shifts.tolist(), widths, strict=True))


def near_pairs(
    phash: np.ndarray, dhash: np.ndarray, max_phash: int, max_dhash: int, budget: int = 1 << 22
) -> np.ndarray:
    """Every (i, j), i < j, within both distances (sorted, unique), by multi-index hashing over pHash blocks:
    exactly the pairs an all-pairs comparison finds (`bench/baselines.py`)."""
    n = len(phash)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    found = []
    for shift, width in _blocks(64, max_phash + 1):
        keys = (phash >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        starts = np.flatnonzero(np.r_[True, keys[order][1:] != keys[order][:-1]])
        sizes = np.diff(np.r_[starts, n])
        batch: list[np.ndarray] = []
        pending = 0
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
            members = order[start : start + size]
            i, j = np.triu_indices(size, k=1)
            batch.append(np.stack([members[i], members[j]], axis=1))
            pending += len(i)
            if pending >= budget:  # check candidates in bounded batches: memory stays flat at any n
                found.append(_within(np.concatenate(batch), phash, dhash, max_phash, max_dhash))
                batch, pending = [], 0
        if batch:
            found.append(_within(np.concatenate(batch), phash, dhash, max_phash, max_dhash))
    pairs = np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.sort(pairs, axis=1), axis=0)


def _within(candidates: np.ndarray, phash: np.ndarray, dhash: np.ndarray, max_phash: int, max_dhash: int):
    a, b = candidates[:, 0], candidates[:, 1]
    keep = (np.bitwise_count(phash[a] ^ phash[b]) <= max_phash) & (np.bitwise_count(dhash[a] ^ dhash[b]) <= max_dhash)
    return candidates[keep]


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
        for i, j in near_pairs(phash, dhash, max_phash, max_dhash).tolist():
            groups.merge(i, j)
    return sorted(sorted(usable[i].relpath for i in subset) for subset in groups.subsets() if len(subset) > 1)
