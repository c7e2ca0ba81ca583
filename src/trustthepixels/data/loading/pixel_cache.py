"""A cache of base images (see `transforms`): decode each image once, reuse it every epoch, run and sweep job.

The cache stores exactly what `load_pixels` returns, so a run with the cache and a run without it see the same
pixels. Images are stored back to back in segment files, read through memory maps, and keyed by the file's
content hash (SHA-256) within one `Preprocessing.key`, so a changed file gets a new entry and a renamed one
keeps its own.

The store is append-only: a build writes the images it lacks into a new segment, then replaces the index
atomically (the commit point). No build ever deletes or rewrites a segment, so a DataLoader worker of another
job that opens a segment later still finds it, and a killed build leaves the previous index intact (its
half-written segment is never named by an index). `rm -r data/cache` reclaims the space when no job runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from filelock import FileLock

from trustthepixels.data.ingest.fileutils import atomic_write_text
from trustthepixels.data.loading.transforms import Preprocessing, load_pixels
from trustthepixels.quiet import progress

log = logging.getLogger(__name__)
CACHE_VERSION = 2

Entry = tuple[str, int, int, int]  # segment file name, byte offset, height, width


def load_base_image(path: Path, pre: Preprocessing) -> np.ndarray:
    """`load_pixels` as an HWC uint8 array, the layout the cache stores."""
    return load_pixels(path, pre).permute(1, 2, 0).contiguous().numpy()


class PixelCache:
    """Read access to a built cache: `get(sha256)` returns the base image as an HWC uint8 array."""

    def __init__(self, cache_dir: Path, entries: dict[str, Entry]):
        self.cache_dir = Path(cache_dir)
        self.entries = entries
        self._maps: dict[str, np.memmap] = {}  # opened lazily, once per DataLoader worker

    def __getstate__(self) -> dict:
        return {"cache_dir": self.cache_dir, "entries": self.entries, "_maps": {}}

    def get(self, sha256: str) -> np.ndarray:
        segment, offset, height, width = self.entries[sha256]
        data = self._maps.get(segment)
        if data is None:
            data = self._maps[segment] = np.memmap(self.cache_dir / segment, dtype=np.uint8, mode="r")
        return np.asarray(data[offset : offset + height * width * 3]).reshape(height, width, 3)


def _index_path(cache_dir: Path, root: Path, pre: Preprocessing) -> Path:
    return cache_dir / f"pixels-{hashlib.sha256(str(root).encode()).hexdigest()[:16]}-{pre.key}-v{CACHE_VERSION}.json"


def _load_index(path: Path) -> dict[str, Entry]:
    """The entries an index names, keeping only those whose segment is complete (a damaged cache is rebuilt)."""
    try:
        index = json.loads(path.read_text())
        if index["version"] != CACHE_VERSION:
            return {}
        complete = {name for name, size in index["segments"].items() if (path.parent / name).stat().st_size == size}
        return {sha: tuple(entry) for sha, entry in index["entries"].items() if entry[0] in complete}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def build_pixel_cache(
    root: Path, files: Sequence[tuple[str, str]], cache_dir: Path, pre: Preprocessing, workers: int | None = None
) -> PixelCache:
    """A cache holding every (relative path, SHA-256) of `files`; only images not cached yet are decoded."""
    root, cache_dir = Path(root), Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    index_path = _index_path(cache_dir, root, pre)
    with FileLock(index_path.with_suffix(".lock")):  # parallel jobs never decode the same images twice
        entries = _load_index(index_path)
        wanted = {sha: rel for rel, sha in files}  # identical files share one entry
        missing = [(sha, rel) for sha, rel in wanted.items() if sha not in entries]
        if not missing:
            return PixelCache(cache_dir, entries)
        segment = f"{index_path.stem}-{secrets.token_hex(4)}.bin"
        offset = 0
        with open(cache_dir / segment, "wb") as out:
            with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
                arrays = pool.map(lambda item: load_base_image(root / item[1], pre), missing)
                description = f"Caching {len(missing)} images at {pre.base_side} px"
                for (sha, _), array in progress(zip(missing, arrays, strict=True), description, total=len(missing)):
                    out.write(array.tobytes())
                    entries[sha] = (segment, offset, *array.shape[:2])
                    offset += array.nbytes
            out.flush()
            os.fsync(out.fileno())
        segments = {name: (cache_dir / name).stat().st_size for name in {e[0] for e in entries.values()}}
        index = {"version": CACHE_VERSION, "root": str(root), "spec": pre.key, "segments": segments, "entries": entries}
        atomic_write_text(index_path, json.dumps(index))  # the commit point
        log.info("Pixel cache: %d images (%d decoded now, %.0f MB)", len(entries), len(missing), offset / 1e6)
        return PixelCache(cache_dir, entries)
