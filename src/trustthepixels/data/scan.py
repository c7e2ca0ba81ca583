"""Find the labelled images under a dataset root and set aside the files that cannot be used.

A root holds one folder per class: `AI/` and `Real/` (the reduced dataset), or the original Kaggle / Hugging
Face names `AiArtData/` and `RealArt/`. Every file below a class folder is decoded once here, in parallel, so
that a broken file is found before training and never in the middle of an epoch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import track

from trustthepixels.data.decode import ImageDecodeError, open_rgb

log = logging.getLogger(__name__)

# Label 1 = AI-generated, 0 = real. Stored in every checkpoint; evaluation and prediction read it from there.
LABELS: dict[int, str] = {0: "Real", 1: "AI"}
CLASS_FOLDERS: dict[int, tuple[str, ...]] = {0: ("Real", "RealArt"), 1: ("AI", "AiArtData")}
GET_DATA_HINT = (
    "Get the reduced 8000-image set: download https://github.com/lucaslbld/GP01-AI-and-Application-project/"
    "releases/download/v1.0/dataset.zip and unzip it so that <root>/AI and <root>/Real exist, "
    "or set data.root=PATH to any folder with AI/ and Real/ (or AiArtData/ and RealArt/) subfolders."
)


class DatasetLayoutError(FileNotFoundError):
    """The dataset root is missing, empty or lacks a class folder."""


@dataclass(frozen=True)
class Sample:
    path: Path  # absolute
    relpath: str  # relative to the root, with '/' separators: the key for splits and caches
    label: int


@dataclass
class ScanResult:
    root: Path
    samples: list[Sample] = field(default_factory=list)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)  # (relpath, label, reason)

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
    """Every regular file below each class folder, sorted by path (so the listing order never matters)."""
    files = [
        (Path(dirpath) / name, label)
        for label, class_dir in find_class_dirs(root).items()
        for dirpath, _, names in os.walk(class_dir, followlinks=True)
        for name in names
    ]
    return sorted(files, key=lambda item: item[0].as_posix())


def _check(path: Path, min_side: int) -> str | None:
    try:
        open_rgb(path, min_side=min_side, draft_size=(64, 64))
    except ImageDecodeError as err:
        return err.reason
    return None


def scan_dataset(root: Path | str, min_side: int = 8, workers: int | None = None) -> ScanResult:
    """Decode every file under `root` once; keep the usable ones and record the others with the reason."""
    root = Path(root).expanduser().resolve()
    files = list_files(root)
    if not files:
        raise DatasetLayoutError(f"{root} has class folders but no files in them. {GET_DATA_HINT}")
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # Pillow releases the GIL while decoding
        reasons = list(
            track(
                pool.map(lambda item: _check(item[0], min_side), files),
                total=len(files),
                description=f"Checking {len(files)} images",
                transient=True,
            )
        )
    result = ScanResult(root)
    for (path, label), reason in zip(files, reasons, strict=True):
        relpath = path.relative_to(root).as_posix()
        if reason is None:
            result.samples.append(Sample(path, relpath, label))
        else:
            result.skipped.append((relpath, label, reason))
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


def samples_by_label(samples: Sequence[Sample]) -> dict[int, list[Sample]]:
    return {label: [s for s in samples if s.label == label] for label in LABELS}
