"""Find the labelled images under a dataset root and set aside the files that cannot be used.

A root holds one folder per class: `AI/` and `Real/` (the reduced dataset), or the original Kaggle / Hugging
Face names `AiArtData/` and `RealArt/`. Every file below a class folder is decoded once (see `fingerprint`),
so that a broken file is found before training and never in the middle of an epoch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from trustthepixels.data.ingest.decode import unusable_reason
from trustthepixels.data.ingest.fingerprint import FileRecord, fingerprint_files
from trustthepixels.data.ingest.roots import Roots, locate, union_relpath
from trustthepixels.errors import UserError

log = logging.getLogger(__name__)

# Label 1 = AI-generated, 0 = real. Stored in every checkpoint; evaluation and prediction read it from there.
LABELS: dict[int, str] = {0: "Real", 1: "AI"}
CLASS_FOLDERS: dict[int, tuple[str, ...]] = {0: ("Real", "RealArt"), 1: ("AI", "AiArtData")}
GET_DATA_HINT = (
    "Get the reduced 8000-image set with `python prepare_data.py` (source=release downloads the published "
    "dataset.zip; source=hf rebuilds it from the Hugging Face dataset), or set data.root=PATH to any folder "
    "with AI/ and Real/ (or AiArtData/ and RealArt/) subfolders."
)


class DatasetLayoutError(UserError, FileNotFoundError):
    """The dataset root is missing, empty or lacks a class folder."""


@dataclass(frozen=True)
class Sample:
    path: Path  # absolute
    relpath: str  # relative to the root, with '/' separators (`<source>/...` in a union): splits' and caches' key
    label: int
    source: str = ""  # the name of the folder it came from (see `roots`)
    path_in_source: str = ""  # its path within that folder, when `relpath` is a union's `<source>/...`

    @property
    def source_relpath(self) -> str:
        return self.path_in_source or self.relpath


@dataclass
class ScanResult:
    root: Path  # the folder scanned; for a union of sources, the first one (see `roots`)
    samples: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # (relpath, label, reason)
    records: dict[str, FileRecord] = field(default_factory=dict)  # every file, usable or not
    roots: Roots = field(default_factory=dict)  # source name -> folder

    def path(self, relpath: str) -> Path:
        return locate(self.roots, relpath) if self.roots else self.root / relpath

    def counts(self) -> dict[str, int]:
        return {name: sum(s.label == label for s in self.samples) for label, name in LABELS.items()}


def find_class_dirs(root: Path) -> dict[int, Path]:
    """Map each label to its folder under `root`, or raise an error that says how to get the data."""
    if not root.is_dir():
        raise DatasetLayoutError(f"Dataset root {root} does not exist. {GET_DATA_HINT}")
    found: dict[int, Path] = {}
    for label, names in CLASS_FOLDERS.items():
        present = [root / n for n in names if (root / n).is_dir()]
        if len(present) > 1:
            raise DatasetLayoutError(f"{root} holds both {present[0].name}/ and {present[1].name}/: keep one.")
        if present:
            found[label] = present[0]
    if not found:
        raise DatasetLayoutError(f"{root} has no AI/ or Real/ folder (nor AiArtData/ or RealArt/). {GET_DATA_HINT}")
    for label, names in CLASS_FOLDERS.items():
        if label not in found:
            raise DatasetLayoutError(
                f"{root} has {found[1 - label].name}/ but no {' or '.join(n + '/' for n in names)} folder: "
                f"a detector needs both classes. {GET_DATA_HINT}"
            )
    return found


def list_files(root: Path) -> list[tuple[Path, int]]:
    """Every file below each class folder, sorted by path (so the listing order never matters).

    Linked folders are followed once each: a link back to a parent (a loop) is not walked again. Broken links
    and unreadable files are listed too; the scan sets them aside with their reason."""
    files = []
    for label, class_dir in find_class_dirs(root).items():
        seen: set[str] = set()
        for dirpath, dirnames, names in os.walk(class_dir, followlinks=True):
            real = os.path.realpath(dirpath)
            if real in seen:
                dirnames[:] = []
                continue
            seen.add(real)
            dirnames[:] = [d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in seen]
            files += [(Path(dirpath) / name, label) for name in names]
    return sorted(files, key=lambda item: item[0].as_posix())


def scan_dataset(root: Path | str, min_side: int = 8, cache_dir: Path | str | None = None) -> ScanResult:
    """Decode every file under `root` once (or take its cached record); keep the usable ones, record the rest."""
    root = Path(root).expanduser().resolve()
    files = list_files(root)
    if not files:
        raise DatasetLayoutError(f"{root} has class folders but no files in them. {GET_DATA_HINT}")
    relpaths = [path.relative_to(root).as_posix() for path, _ in files]
    records = fingerprint_files(root, relpaths, Path(cache_dir) if cache_dir else None)
    result = ScanResult(root)
    for (path, label), record in zip(files, records, strict=True):
        result.records[record.relpath] = record
        reason = record.error or unusable_reason(record.width, record.height, min_side)
        if reason is None:
            result.samples.append(Sample(path, record.relpath, label))
        else:
            result.skipped.append((record.relpath, label, reason))
    counts = result.counts()
    if any(n == 0 for n in counts.values()):
        empty = [name for name, n in counts.items() if n == 0]
        raise DatasetLayoutError(f"{root}: no readable image in class {', '.join(empty)}. {GET_DATA_HINT}")
    for relpath, _, reason in result.skipped:
        log.warning("Skipping %s: %s", root / relpath, reason)
    log.info(
        "Found %s images in %s (%s); skipped %d unusable file(s)%s",
        sum(counts.values()),
        root,
        ", ".join(f"{n} {name}" for name, n in counts.items()),
        len(result.skipped),
        " (listed in the run's skipped.csv: re-export or remove them)" if result.skipped else "",
    )
    return result


def scan_sources(roots: Roots, min_side: int = 8, cache_dir: Path | str | None = None) -> ScanResult:
    """`scan_dataset` of each source, as one result keyed by `union_relpath` (each sample knows its source)."""
    union = ScanResult(next(iter(roots.values())).expanduser().resolve(), roots=dict(roots))
    for name, folder in roots.items():
        part = scan_dataset(folder, min_side=min_side, cache_dir=cache_dir)
        union.roots[name] = part.root
        key = partial(union_relpath, roots, name)
        union.samples += [Sample(s.path, key(s.relpath), s.label, name, s.relpath) for s in part.samples]
        union.skipped += [(key(relpath), label, reason) for relpath, label, reason in part.skipped]
        union.records |= {key(r): replace(record, relpath=key(r)) for r, record in part.records.items()}
    return union
