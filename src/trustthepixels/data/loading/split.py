"""A stratified train/val/calibration/test split that depends only on the seed and each file's relative path.

Within each class the files are ordered by a keyed hash of their relative path, then cut at the requested
fractions. The result does not depend on the order a filesystem lists files in, nor on where the dataset
folder lives, and the same seed reproduces it on any machine. Near-duplicate groups move as one unit, so the
same picture never sits in train and in test. A union of sources is stratified by source and class: each
source is cut at the fractions on its own, exactly as it is cut alone; a near-duplicate group spanning sources
is kept whole within each source and reported (`cross_source_groups`), never allowed to move a source's images.

The calibration part is carved out of the validation part (`carve_calibration`), so train and test are exactly
what they were before it existed: validation chooses the checkpoint and stops training, the calibration part alone
fits what decides verdicts (metrics/calibration.py), on images that chose nothing.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from trustthepixels.data.ingest.scan import LABELS, Sample
from trustthepixels.errors import ConfigError

SPLITS = ("train", "val", "calibration", "test")
CUT = ("train", "val", "test")  # what data.split's three fractions cut; calibration comes out of val


def _rank_key(seed: int, relpath: str) -> str:
    return hashlib.sha256(f"{seed}\0{relpath}".encode()).hexdigest()


def stratum(sample: Sample) -> tuple[str, int]:
    """What a split keeps in proportion: the source and the class."""
    return sample.source, sample.label


def _strata(samples: Sequence[Sample]) -> list[tuple[str, int]]:
    return sorted({stratum(s) for s in samples}, key=lambda k: (k[0], k[1]))


def split_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """How many of `n` files of one class go to train, val and test; val and test get at least one."""
    train_f, val_f, test_f = fractions
    n_val = max(1, round(n * val_f)) if val_f > 0 else 0
    n_test = max(1, round(n * test_f)) if test_f > 0 else 0
    n_train = n - n_val - n_test
    if n_train < 1 and train_f > 0:
        raise ConfigError(
            f"{n} images in a class are too few for data.split={list(fractions)}: each class needs an image for "
            "train, val and test. Add images or change data.split."
        )
    return n_train, n_val, n_test


def check_fractions(fractions: object) -> None:
    """data.split must be three non-negative fractions summing to 1 (checked before any image is read)."""
    values = list(fractions) if isinstance(fractions, list | tuple) else None
    if (
        values is None
        or len(values) != 3
        or not all(isinstance(f, int | float) and not isinstance(f, bool) and f >= 0 for f in values)
        or abs(sum(values) - 1) > 1e-6
    ):
        raise ConfigError(
            f"data.split={fractions!r}: use three non-negative fractions for train, val and test that sum to 1, "
            "e.g. data.split=[0.8,0.1,0.1]"
        )


def stratified_split(
    samples: Sequence[Sample],
    fractions: Sequence[float],
    seed: int,
    groups: Iterable[Iterable[str]] = (),
) -> dict[str, list[Sample]]:
    """Assign every sample to one of `SPLITS`, keeping the class balance of each part.

    `groups` lists relative paths that must share a split (near-duplicates). Units (groups, or single files)
    are taken in seeded-hash order and each fills the first split, train first, that still has room for all
    of its images of every class. With no groups this is exactly a per-class cut at the fractions.
    """
    check_fractions(list(fractions))
    units = _units(samples, groups)
    counts = Counter(stratum(s) for s in samples)
    room = {key: dict(zip(CUT, split_counts(counts[key], fractions), strict=True)) for key in _strata(samples)}
    parts = _fill(units, room, CUT, seed)
    return {name: _interleave(parts[name]) for name in CUT}


def carve_calibration(
    parts: dict[str, list[Sample]], share: float, seed: int, groups: Iterable[Iterable[str]] = ()
) -> dict[str, list[Sample]]:
    """Move `share` of each (source, class) of the validation part to a `calibration` part, near-duplicate groups
    whole, in a seeded order of its own (train and test do not move). Validation keeps at least one image of each
    stratum it has; `share` 0 leaves the calibration part empty (the validation part then calibrates too)."""
    val = parts["val"]
    counts = Counter(stratum(s) for s in val)
    room = {}
    for key in _strata(val):
        n_cal = min(round(counts[key] * share), counts[key] - 1) if share > 0 else 0
        room[key] = {"calibration": n_cal, "val": counts[key] - n_cal}
    members = {s.relpath for s in val}
    carved = _fill(
        _units(val, ([r for r in g if r in members] for g in groups)), room, ("calibration", "val"), seed + 2
    )
    return {**parts, "val": _interleave(carved["val"]), "calibration": _interleave(carved["calibration"])}


def _units(samples: Sequence[Sample], groups: Iterable[Iterable[str]]) -> dict[str, list[Sample]]:
    """Samples gathered into units that move together: a near-duplicate group's images within one source, or a
    single file. A group spanning sources is cut per source, so that every source gets exactly the split it gets
    alone (what the benchmark's columns rely on); `cross_source_groups` reports those groups as leakage."""
    source_of = {s.relpath: s.source for s in samples}
    unit_of: dict[str, str] = {}
    for group in groups:
        by_source: dict[str, list[str]] = defaultdict(list)
        for relpath in group:
            by_source[source_of.get(relpath, "")].append(relpath)
        for members in by_source.values():
            members.sort()
            for relpath in members:
                unit_of[relpath] = members[0]
    units: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        units[unit_of.get(sample.relpath, sample.relpath)].append(sample)
    return units


def _fill(
    units: dict[str, list[Sample]], room: dict[tuple[str, int], dict[str, int]], names: Sequence[str], seed: int
) -> dict[str, list[Sample]]:
    """Units in seeded-hash order, each into the first part that still has room for all its images of every
    stratum; a group too big for any remaining room goes where most room is left."""
    parts: dict[str, list[Sample]] = {name: [] for name in names}
    # A unit ranks by its first member's path within its own source: a source's units come in the same order
    # alone and in a union, so each source gets the same split either way.
    order = {key: (_rank_key(seed, min(s.source_relpath for s in units[key])), key) for key in units}
    for key in sorted(units, key=order.__getitem__):
        members = units[key]
        need = Counter(stratum(s) for s in members)
        fits = [n for n in names if all(room[k][n] >= count for k, count in need.items())]
        name = fits[0] if fits else max(names, key=lambda n: sum(room[k][n] for k in need))
        for k, count in need.items():
            room[k][name] -= count
        parts[name] += members
    return parts


def cross_source_groups(samples: Sequence[Sample], groups: Iterable[Iterable[str]]) -> list[list[str]]:
    """The near-duplicate groups whose images come from more than one source: the same picture may sit in one
    source's training part and another's test part (leakage between sources, reported, never fixed by moving a
    source's images)."""
    source_of = {s.relpath: s.source for s in samples}
    return [sorted(group) for group in groups if len({source_of.get(r, "") for r in group}) > 1]


def cross_validation_split(
    samples: Sequence[Sample],
    folds: int,
    fold: int,
    fractions: Sequence[float],
    seed: int,
    groups: Iterable[Iterable[str]] = (),
) -> dict[str, list[Sample]]:
    """Fold `fold` of `folds` as test; validation carved from the other folds at the ratio val / (train + val)
    of `fractions`. Folds are stratified by class and keep near-duplicate groups whole, exactly like the split,
    and depend only on the seed and the files (never on the model): two recipes see identical folds."""
    if not (isinstance(folds, int) and folds >= 2 and isinstance(fold, int) and 0 <= fold < folds):
        raise ConfigError(f"data.folds={folds!r}, data.fold={fold!r}: use folds >= 2 and 0 <= fold < folds")
    groups = [list(g) for g in groups]
    units = _units(samples, groups)
    names = [f"fold{k}" for k in range(folds)]
    room = {}
    counts = Counter(stratum(s) for s in samples)
    for key in _strata(samples):
        n = counts[key]
        if n < folds:
            raise ConfigError(f"{n} images in a class are too few for data.folds={folds}: use fewer folds")
        room[key] = {name: n // folds + (k < n % folds) for k, name in enumerate(names)}
    parts = _fill(units, room, names, seed)
    test = parts[names[fold]]
    rest = [s for name in names if name != names[fold] for s in parts[name]]
    train_f, val_f, _ = fractions
    inner = stratified_split(rest, (train_f / (train_f + val_f), val_f / (train_f + val_f), 0.0), seed, groups)
    return {
        "train": inner["train"],
        "val": inner["val"],
        "test": _interleave(test),
    }


def cap_per_stratum(
    samples: Sequence[Sample], limit: int, seed: int, pairs: Iterable[tuple[str, str]] = ()
) -> list[Sample]:
    """At most `limit` samples of each (source, class), a seeded choice that depends on each file's path within
    its source only: the training part of a large source, capped, without touching validation or test. The two
    images of a pair (an aligned set's photo and its reconstruction) rank by the photo's path: both stay or both go."""
    rank_as = {ai: real for real, ai in pairs}
    source_path = {s.relpath: s.source_relpath for s in samples}

    def rank(s: Sample) -> str:
        return _rank_key(seed + 1, source_path.get(rank_as.get(s.relpath, ""), s.source_relpath))

    kept = []
    for key in _strata(samples):
        members = [s for s in samples if stratum(s) == key]
        kept += sorted(members, key=rank)[:limit]
    return _interleave(kept)


def _interleave(samples: list[Sample]) -> list[Sample]:
    """Merge the strata (source, class) so that every prefix keeps their ratio: a limited or single-batch
    evaluation (limit_val_batches, fast_dev_run) still sees both classes, and AUROC stays defined."""
    groups = [[s for s in samples if stratum(s) == key] for key in _strata(samples)]
    keyed = [((i + 0.5) / len(group), g, s) for g, group in enumerate(groups) for i, s in enumerate(group)]
    return [s for *_, s in sorted(keyed, key=lambda item: item[:2])]


def write_split_csv(parts: dict[str, list[Sample]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "class", "split", "source"])
        for name in SPLITS:
            for s in sorted(parts.get(name, []), key=lambda s: s.relpath):
                writer.writerow([s.relpath, s.label, LABELS[s.label], name, s.source])


def read_split_csv(path: Path, source: str | None = None) -> dict[str, list[tuple[str, int]]]:
    """(relative path, label) per split, as `write_split_csv` wrote them: a finished run's own split; with
    `source`, only that source's images (a union's split.csv names each image's source). A split.csv from before
    the calibration part has none."""
    parts: dict[str, list[tuple[str, int]]] = {name: [] for name in SPLITS}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if source is None or row.get("source") == source:
                parts[row["split"]].append((row["path"], int(row["label"])))
    return parts
