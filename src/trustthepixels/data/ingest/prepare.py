"""Build the reduced, balanced dataset folder: from the Hugging Face dataset, or from the published zip.

Both write into a staging folder beside `out` and rename it into place at the end, so an interrupted run
never leaves a half-filled dataset; an existing non-empty `out` is kept unless `overwrite` is set.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from trustthepixels.config import validated
from trustthepixels.data.ingest.archive import UnsafeArchiveError, extract_archive
from trustthepixels.data.ingest.download import DownloadError, download
from trustthepixels.data.ingest.scan import CLASS_FOLDERS, DatasetLayoutError, find_class_dirs
from trustthepixels.data.ingest.settings import PrepareSettings
from trustthepixels.errors import UserError
from trustthepixels.quiet import progress

log = logging.getLogger(__name__)

PROVENANCE = "provenance.json"


class DatasetExistsError(UserError, FileExistsError):
    """`out` already holds a dataset; it is only replaced with overwrite=true."""


@contextmanager
def atomic_output_dir(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside `out`; on success it replaces `out`, on any error it is deleted."""
    out = Path(out).expanduser().resolve()
    with FileLock(out.with_name(f".{out.name}.lock")):
        yield from _staged(out, overwrite)


def refuse_existing(out: Path, overwrite: bool) -> None:
    """A dataset `out` already holds is replaced only with overwrite=true."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DatasetExistsError(f"{out} exists and is not empty: pass overwrite=true to replace it")


def replace_folder(finished: Path, out: Path) -> None:
    """`finished` becomes `out` by a rename; an older `out` is moved aside first, and removed once it is done (the
    caller holds `out`'s lock)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)  # left by a run killed in between
        out.rename(old)
        finished.rename(out)
        shutil.rmtree(old)
    else:
        finished.rename(out)


def _staged(out: Path, overwrite: bool) -> Iterator[Path]:
    refuse_existing(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.staging-*"):  # left by a run that was killed
        log.warning("Removing %s, left by an interrupted run", stale)
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        yield staging
        replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_provenance(folder: Path, info: dict[str, Any]) -> None:
    info = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info}
    (folder / PROVENANCE).write_text(json.dumps(info, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- Hugging Face


def select_rows(labels: Sequence[int], ai_label: int, real_label: int, per_class: int, seed: int) -> tuple[list, list]:
    """The original script's sampling: row indices per class in row order, `random.seed(seed)`, AI drawn first."""
    ai_indices = [i for i, label in enumerate(labels) if label == ai_label]
    real_indices = [i for i, label in enumerate(labels) if label == real_label]
    for name, indices in (("AI", ai_indices), ("Real", real_indices)):
        if len(indices) < per_class:
            raise ValueError(f"per_class={per_class} but the dataset has only {len(indices)} {name} rows")
    rng = random.Random(seed)  # the same stream as random.seed(seed) + random.sample(...)
    return rng.sample(ai_indices, per_class), rng.sample(real_indices, per_class)


def load_hf_split(dataset: str, split: str):
    """`datasets.load_dataset` for a hub name or a local directory (parquet, imagefolder, ...)."""
    import datasets

    try:
        return datasets.load_dataset(dataset, split=split)
    except (OSError, ConnectionError) as err:
        raise RuntimeError(
            f"Could not load dataset {dataset!r} ({err}). Without access to the Hugging Face hub, use "
            "source=release, or dataset=<a local copy of the dataset (its parquet files)>."
        ) from err


def read_labels(ds, label_column: str) -> list[int]:
    """The label column alone, read from Arrow: no image is decoded."""
    return ds.select_columns([label_column]).with_format("arrow")[:][label_column].to_pylist()


def prepare_from_hf(out: Path, /, **settings: Any) -> dict[str, Any]:
    """Same selection, names and pixels as the original script (`bench/baselines.py`), decoding only the chosen
    rows. `settings` are prepare_data's (`PrepareSettings`: dataset, split, per_class, seed, the label and image
    columns, the two label names, overwrite, workers); the ones left out take their defaults."""
    import datasets

    s = validated(PrepareSettings, settings, "")
    with atomic_output_dir(out, s.overwrite) as staging:
        ds = load_hf_split(s.dataset, s.split)
        label_feature = ds.features[s.label_column]
        if not isinstance(label_feature, datasets.ClassLabel):
            raise ValueError(f"Column {s.label_column!r} of {s.dataset} is {label_feature}, not a ClassLabel")
        names = label_feature.names  # never assumed: read from the dataset's own features
        for wanted in (s.ai_label_name, s.real_label_name):
            if wanted not in names:
                raise ValueError(f"{s.dataset} has no label {wanted!r}; its labels are {names}")
        ai_rows, real_rows = select_rows(
            read_labels(ds, s.label_column),
            names.index(s.ai_label_name),
            names.index(s.real_label_name),
            s.per_class,
            s.seed,
        )
        decoder = ds.features[s.image_column]
        raw = ds.select_columns([s.image_column]).cast_column(s.image_column, datasets.Image(decode=False))
        jobs = [(row, f"AI/ai_{i:04d}.jpg") for i, row in enumerate(ai_rows)]
        jobs += [(row, f"Real/real_{i:04d}.jpg") for i, row in enumerate(real_rows)]
        (staging / "AI").mkdir()
        (staging / "Real").mkdir()

        def save(value: dict, relpath: str) -> None:
            img = decoder.decode_example(value)  # datasets' own decoding (EXIF transposition included)
            if img.mode != "RGB":
                img = img.convert("RGB")
            img.save(staging / relpath)  # Pillow's JPEG defaults, as the original

        # Pillow releases the GIL while decoding and encoding; 2 threads per core also overlap the Python work.
        with ThreadPoolExecutor(s.workers or min(16, 2 * (os.cpu_count() or 1))) as pool:
            futures = []
            for start in range(0, len(jobs), 256):  # read encoded bytes in batches; decode and write in threads
                chunk = jobs[start : start + 256]
                values = raw[[row for row, _ in chunk]][s.image_column]
                futures += [
                    pool.submit(save, value, relpath) for value, (_, relpath) in zip(values, chunk, strict=True)
                ]
            for future in progress(as_completed(futures), "Writing images", total=len(futures)):
                future.result()
        info = {
            "source": "hf",
            "dataset": s.dataset,
            "split": s.split,
            "rows": len(ds),
            "per_class": s.per_class,
            "seed": s.seed,
            "labels": {"AI": s.ai_label_name, "Real": s.real_label_name},
            "ai_rows": ai_rows,
            "real_rows": real_rows,
        }
        write_provenance(staging, info)
    log.info("Wrote %d + %d images to %s", s.per_class, s.per_class, out)
    return info


# ----------------------------------------------------------------------------------------------- release zip


def _find_dataset_root(folder: Path, max_depth: int = 3) -> Path:
    """The folder inside an extracted archive that holds the class folders."""
    candidates = [folder]
    for _ in range(max_depth + 1):
        next_level = []
        for candidate in candidates:
            try:
                find_class_dirs(candidate)
                return candidate
            except DatasetLayoutError:
                next_level += [
                    p for p in sorted(candidate.iterdir()) if p.is_dir() and not p.name.startswith(("_", "."))
                ]
        candidates = next_level
    raise DatasetLayoutError("The archive has no folder with AI/ and Real/ (or AiArtData/ and RealArt/) in it")


def prepare_from_release(out: Path, /, retries: int = 5, **settings: Any) -> dict[str, Any]:
    """Download the published zip (resumable), extract it safely and normalise it to `out/AI`, `out/Real`.
    `settings` are prepare_data's (`PrepareSettings`: url, sha256, overwrite, keep_archive); the ones left out take
    their defaults."""
    s = validated(PrepareSettings, settings, "")
    url, out = s.url, Path(out).expanduser().resolve()
    archive = out.with_name(out.name + ".zip")  # beside `out`, so an interrupted download resumes
    with atomic_output_dir(out, s.overwrite) as staging:
        try:
            fetched = download(url, archive, retries=retries, expected_sha256=s.sha256)
        except DownloadError as err:
            raise DownloadError(
                f"{err}. Without network access, copy an AI/ + Real/ folder to {out}, or rebuild it from a local "
                "copy of the Hugging Face dataset: python prepare_data.py source=hf dataset=DIR. A complete offline "
                "run on the shared images: python train.py experiment=real_vs_ai_lite0"
            ) from err
        extracted = staging / "_extracted"
        try:
            count = extract_archive(fetched.path, extracted)
        except UnsafeArchiveError:
            archive.unlink(missing_ok=True)  # refused: nothing of it is kept
            raise
        for label, class_dir in find_class_dirs(_find_dataset_root(extracted)).items():
            class_dir.rename(staging / CLASS_FOLDERS[label][0])
        shutil.rmtree(extracted)
        info = {
            "source": "release",
            "url": url,
            "archive_bytes": fetched.size,
            "archive_sha256": fetched.sha256,
            "archive_files": count,
        }
        write_provenance(staging, info)
    if not s.keep_archive:
        archive.unlink()
    log.info("Extracted %d files from %s into %s (SHA-256 %s)", count, url, out, fetched.sha256)
    return info
