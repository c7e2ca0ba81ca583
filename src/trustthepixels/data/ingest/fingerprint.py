"""One decode pass per file: is it a usable image, what is it, and what does it look like (perceptual hashes).

Scanning a dataset, auditing it and splitting it without near-duplicate leaks all need this, and decoding is
the expensive part, so each file's record is cached per dataset root, keyed by relative path, size and
modification time. A changed file is fingerprinted again; the cache is written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import imagehash

from trustthepixels.data.ingest.decode import ImageDecodeError, decode_image
from trustthepixels.data.ingest.fileutils import atomic_write_text
from trustthepixels.quiet import progress

log = logging.getLogger(__name__)

# Bump when what a record holds, or how it is computed, changes: older caches are then ignored.
CACHE_VERSION = 3  # 2: the decompression-bomb rule is explicit; 3: ctime and inode in the key, the decode gate
# JPEG DCT scaling down to this size is plenty for 8x8 / 9x8 hashes and keeps the pass fast.
DRAFT_SIZE = (128, 128)


@dataclass(frozen=True)
class FileRecord:
    relpath: str
    bytes: int
    mtime_ns: int
    sha256: str
    error: str | None = None  # why the file cannot be used, or None
    # With size and mtime, what tells a rewritten file from the one fingerprinted (as git's index does): mtime can
    # be set back (`touch -r`, a copy keeping times), ctime cannot, and a file replaced by another has a new inode.
    ctime_ns: int = 0
    inode: int = 0
    format: str | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None
    phash: str | None = None  # 64-bit hex; Hamming distance ~ visual difference
    dhash: str | None = None


def fingerprint_file(root: Path, relpath: str) -> FileRecord:
    path = root / relpath
    try:
        stat = path.stat()  # before reading: a change after this makes the next run read the file again
        data = path.read_bytes()
    except OSError as err:
        return unreadable_record(relpath, err)
    base = {
        "relpath": relpath,
        "bytes": len(data),
        "mtime_ns": stat.st_mtime_ns,
        "sha256": hashlib.sha256(data).hexdigest(),
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
    }
    try:
        rgb, meta = decode_image(path, draft_size=DRAFT_SIZE)
    except ImageDecodeError as err:
        return FileRecord(**base, error=err.reason)
    return FileRecord(**base, **meta, phash=str(imagehash.phash(rgb)), dhash=str(imagehash.dhash(rgb)))


def unreadable_record(relpath: str, err: OSError) -> FileRecord:
    """A file that cannot even be read (a broken link, no permission, a device): kept, with the reason."""
    if isinstance(err, FileNotFoundError):
        reason = "broken symbolic link" if os.path.islink(err.filename or "") else "file disappeared"
    elif isinstance(err, PermissionError):
        reason = "permission denied: cannot read the file"
    else:
        reason = f"cannot be read ({err.strerror or err})"
    return FileRecord(relpath=relpath, bytes=0, mtime_ns=0, sha256="", error=reason)


def cache_path(cache_dir: Path, root: Path) -> Path:
    return Path(cache_dir) / f"fingerprints-{hashlib.sha256(str(root).encode()).hexdigest()[:16]}.json"


def _load_cache(path: Path | None) -> dict[str, FileRecord]:
    if path is None or not path.is_file():
        return {}
    try:
        payload = json.loads(path.read_text())
        if payload.get("version") != CACHE_VERSION:
            return {}
        return {r["relpath"]: FileRecord(**r) for r in payload["records"]}
    except (ValueError, KeyError, TypeError) as err:  # a damaged cache is rebuilt, never trusted
        log.warning("Ignoring unreadable fingerprint cache %s (%s)", path, err)
        return {}


def _save_cache(path: Path, root: Path, records: Sequence[FileRecord]) -> None:
    payload = {"version": CACHE_VERSION, "root": str(root), "records": [asdict(r) for r in records]}
    atomic_write_text(path, json.dumps(payload))


def fingerprint_files(
    root: Path, relpaths: Sequence[str], cache_dir: Path | None = None, workers: int | None = None
) -> list[FileRecord]:
    """Records for `relpaths` under `root`, from the cache where the file is unchanged."""
    path = cache_path(cache_dir, root) if cache_dir else None
    cached = _load_cache(path)
    records: dict[str, FileRecord] = {}
    todo = []
    for relpath in relpaths:
        try:
            stat = (root / relpath).stat()
        except OSError as err:
            records[relpath] = unreadable_record(relpath, err)
            continue
        hit = cached.get(relpath)
        if hit is not None and (hit.bytes, hit.mtime_ns, hit.ctime_ns, hit.inode) == (
            stat.st_size,
            stat.st_mtime_ns,
            stat.st_ctime_ns,
            stat.st_ino,
        ):
            records[relpath] = hit
        else:
            todo.append(relpath)
    if todo:
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:  # Pillow releases the GIL while decoding
            done = pool.map(lambda rel: fingerprint_file(root, rel), todo)
            for record in progress(done, f"Checking {len(todo)} images", total=len(todo)):
                records[record.relpath] = record
        if path is not None:
            _save_cache(path, root, [r for r in records.values() if r.sha256])
    log.info("Fingerprints: %d from cache, %d computed", len(relpaths) - len(todo), len(todo))
    return [records[r] for r in relpaths]
