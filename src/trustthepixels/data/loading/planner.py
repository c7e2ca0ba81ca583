"""The split of a dataset, planned without Lightning: scan the sources, find near-duplicate groups and the pairs of
aligned sets, split (or cut one cross-validation fold), cap the training part; then the run's manifests. The
DataModule plans this way, and so does the benchmark, to find a source's test split without training on it.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trustthepixels.data.audit.dedup import duplicate_groups
from trustthepixels.data.ingest.fingerprint import FileRecord
from trustthepixels.data.ingest.pairs import read_pairs
from trustthepixels.data.ingest.roots import Roots, union_relpath
from trustthepixels.data.ingest.scan import LABELS, Sample, ScanResult, scan_sources
from trustthepixels.data.loading.settings import DataSettings
from trustthepixels.data.loading.split import (
    cap_per_stratum,
    carve_calibration,
    cross_source_groups,
    cross_validation_split,
    stratified_split,
    stratum,
    write_split_csv,
)
from trustthepixels.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class SplitPlan:
    scan: ScanResult
    parts: dict[str, list[Sample]]  # train, val, calibration, test
    duplicate_groups: list[list[str]]  # near-duplicates, each kept within one split (per source)
    cross_source_duplicates: list[list[str]]  # groups spanning sources: possible leakage between them
    pairs: list[tuple[str, str]]  # (Real, AI) of each photo and its reconstruction in an aligned set, usable both


def plan_split(roots: Roots, data: DataSettings) -> SplitPlan:
    """The samples of each split, as the `data` settings cut them (split, seed, min_image_side, cache_dir,
    near_duplicates, folds and fold, max_train_per_class, calibration_share); no pixels are read beyond the scan
    (whose fingerprints are cached)."""
    scan = scan_sources(roots, min_side=data.min_image_side, cache_dir=data.cache_dir)
    groups, across = [], []
    if data.near_duplicates:
        groups, across = source_duplicate_groups(scan.samples, scan.records, vars(data.near_duplicates))
        if groups:
            log.info(
                "%d near-duplicate groups (%d images) kept within one split each", len(groups), sum(map(len, groups))
            )
    pairs = aligned_pairs(scan)
    units = groups
    if pairs:
        log.info("%d pairs of a photo and its reconstruction, each kept within one split", len(pairs))
        units = merge_groups([*groups, *map(list, pairs)])
    if across:
        log.warning(
            "%d near-duplicate groups span two or more sources (e.g. %s): each source keeps its own split, so these "
            "pictures may be in one source's training part and another's test part (listed in the run's "
            "cross_source_duplicates.csv)",
            len(across),
            ", ".join(across[0]),
        )
    fractions, seed = tuple(data.split), data.seed
    if data.folds:  # k-fold cross-validation: this job's fold is the test split
        parts = cross_validation_split(scan.samples, data.folds, data.fold, fractions, seed, units)
    else:
        parts = stratified_split(scan.samples, fractions, seed, units)
    parts = carve_calibration(parts, data.calibration_share, seed, units)
    if data.max_train_per_class:
        parts["train"] = cap_per_stratum(parts["train"], data.max_train_per_class, seed, pairs)
    return SplitPlan(scan, parts, groups, across, pairs)


def aligned_pairs(scan: ScanResult) -> list[tuple[str, str]]:
    """The pairs that each source's manifest.csv names (an aligned set's: see data/aligned), as union keys, where
    both images are usable."""
    usable = {s.relpath for s in scan.samples}
    pairs = []
    for name, folder in scan.roots.items():
        for real, ai in read_pairs(folder):
            keys = (union_relpath(scan.roots, name, real), union_relpath(scan.roots, name, ai))
            if keys[0] in usable and keys[1] in usable:
                pairs.append(keys)
    return pairs


def merge_groups(groups: Sequence[Sequence[str]]) -> list[list[str]]:
    """Groups that share a member, merged (a near-duplicate of a paired photo joins its pair): union-find."""
    parent: dict[str, str] = {}

    def find(item: str) -> str:
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for group in groups:
        for member in group[1:]:
            parent[find(member)] = find(group[0])
        find(group[0])
    merged: dict[str, list[str]] = defaultdict(list)
    for item in parent:
        merged[find(item)].append(item)
    return sorted(sorted(members) for members in merged.values() if len(members) > 1)


def source_duplicate_groups(
    samples: Sequence[Sample], records: Mapping[str, FileRecord], near_duplicates: Mapping[str, int]
) -> tuple[list[list[str]], list[list[str]]]:
    """Near-duplicate groups formed within each source alone, so that a source's split in any union of sources is
    its split alone (what the benchmark's columns rely on): closed over the union, an image of source B close to
    two images of source A would chain them into one group and move A's images. The union's groups are formed
    too, only to report those spanning sources (possible leakage between them)."""
    phash, dhash = near_duplicates["phash"], near_duplicates["dhash"]
    by_source: dict[str, list[FileRecord]] = defaultdict(list)
    for sample in samples:
        by_source[sample.source].append(records[sample.relpath])
    groups = [g for source in by_source.values() for g in duplicate_groups(source, phash, dhash)]
    if len(by_source) < 2:
        return groups, []
    union = duplicate_groups([records[s.relpath] for s in samples], phash, dhash)
    return groups, cross_source_groups(samples, union)


def calibration_halves(
    samples: Sequence[Sample], records: Mapping[str, FileRecord], near_duplicates: Mapping[str, int] | None, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """A labelled set cut in two to recalibrate a detector on it (seeded, per source and class, near-duplicate groups
    whole): the half a record is fitted on, and the half it is checked on. calibrate.py's cut of a folder, and
    benchmark.py's of each out-of-source cell."""
    counts = Counter(stratum(s) for s in samples)
    if few := [f"{n} {LABELS[label]} image of {source}" for (source, label), n in sorted(counts.items()) if n < 2]:
        raise UserError(f"{' and '.join(few)}: a half to fit on and one to check on need 2 or more of each class")
    groups = source_duplicate_groups(samples, records, near_duplicates)[0] if near_duplicates else []
    halves = stratified_split(samples, (0.5, 0.5, 0.0), seed, groups)
    return halves["train"], halves["val"]


def write_manifests(plan: SplitPlan, output_dir: Path) -> None:
    """split.csv (every image's split), skipped.csv (every unusable file and why) and, when near-duplicates span
    sources, cross_source_duplicates.csv."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_split_csv(plan.parts, output_dir / "split.csv")
    with open(output_dir / "skipped.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "class", "reason"])
        for relpath, label, reason in plan.scan.skipped:
            writer.writerow([relpath, label, LABELS[label], reason])
    if plan.cross_source_duplicates:
        split_of = {s.relpath: name for name, samples in plan.parts.items() for s in samples}
        with open(output_dir / "cross_source_duplicates.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["group", "path", "split"])
            for i, group in enumerate(plan.cross_source_duplicates):
                writer.writerows([i, relpath, split_of.get(relpath, "")] for relpath in group)
