"""HTTP(S) download with a progress bar, retries and resume (Range requests), and its size and SHA-256."""

from __future__ import annotations

import hashlib
import logging
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from trustthepixels.errors import UserError

log = logging.getLogger(__name__)
CHUNK = 1 << 20


class DownloadError(UserError, OSError):
    pass


@dataclass(frozen=True)
class Downloaded:
    path: Path
    size: int
    sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, part: Path, progress: Progress, task, timeout: float) -> None:
    """One attempt: continue `part` from its current size when the server honours Range."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to fetch: the part file is complete
            return
        raise
    with response:
        if have and response.status != 206:  # the server ignored Range: start again
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        progress.update(task, total=total, completed=have)
        with open(part, "ab" if have else "wb") as f:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                progress.advance(task, len(chunk))
    if total is not None and part.stat().st_size != total:
        raise DownloadError(f"connection closed after {part.stat().st_size} of {total} bytes")


def _transient(err: BaseException) -> bool:
    """Worth another try: timeouts, dropped connections, server errors. Not: no DNS, refused, 4xx."""
    if isinstance(err, urllib.error.HTTPError):
        return err.code >= 500 or err.code == 429
    reason = getattr(err, "reason", None)
    return not isinstance(reason, (socket.gaierror, ConnectionRefusedError))


def download(
    url: str,
    dest: Path,
    retries: int = 5,
    timeout: float = 60.0,
    backoff: float = 2.0,
    expected_sha256: str | None = None,
) -> Downloaded:
    """Download `url` to `dest` (through `dest.part`, kept between attempts and runs so a download resumes)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    columns = (
        TextColumn(f"[bold]{dest.name}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("download", total=None)
        for attempt in range(1, retries + 1):
            try:
                _fetch(url, part, progress, task, timeout)
                break
            except (urllib.error.URLError, HTTPException, TimeoutError, ConnectionError, DownloadError) as err:
                if not _transient(err):
                    raise DownloadError(f"Could not download {url}: {err}") from err
                if attempt == retries:
                    raise DownloadError(f"Could not download {url} after {retries} attempts: {err}") from err
                wait = backoff ** (attempt - 1)
                log.warning("Download of %s failed (%s); attempt %d/%d in %.0f s", url, err, attempt + 1, retries, wait)
                time.sleep(wait)
    digest = sha256_of(part)
    if expected_sha256 and digest != expected_sha256.lower():
        part.unlink()
        raise DownloadError(f"{url}: SHA-256 {digest} does not match the expected {expected_sha256}; file deleted")
    part.replace(dest)
    size = dest.stat().st_size
    log.info("Downloaded %s: %d bytes, SHA-256 %s", url, size, digest)
    return Downloaded(dest, size, digest)
