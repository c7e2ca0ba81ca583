"""Safe zip extraction: every entry is checked before anything is written."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from trustthepixels.errors import UserError


class UnsafeArchiveError(UserError, ValueError):
    """The archive is damaged or holds something that must not be extracted; nothing was written."""


def check_archive(
    archive: Path, max_entries: int = 100_000, max_total_bytes: int = 20 << 30, max_ratio: float = 200.0
) -> list[zipfile.ZipInfo]:
    """The archive's file entries, or `UnsafeArchiveError` naming the first problem.

    Refused: absolute paths, `..` components, symbolic links and other special files, more than `max_entries`
    entries, more than `max_total_bytes` uncompressed, or an entry compressed more than `max_ratio` times
    (a zip bomb). An archive whose central directory is missing (truncated) is refused too.
    """
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > max_entries:
                raise UnsafeArchiveError(f"{archive}: {len(infos)} entries, more than the limit of {max_entries}")
            total = 0
            for info in infos:
                name = info.filename
                if name.startswith(("/", "\\")) or PureWindowsPath(name).drive or PurePosixPath(name).is_absolute():
                    raise UnsafeArchiveError(f"{archive}: entry {name!r} has an absolute path")
                if ".." in PurePosixPath(name.replace("\\", "/")).parts:
                    raise UnsafeArchiveError(f"{archive}: entry {name!r} points outside the target ('..')")
                kind = stat.S_IFMT(info.external_attr >> 16)
                if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
                    raise UnsafeArchiveError(f"{archive}: entry {name!r} is a link or special file")
                total += info.file_size
                if info.compress_size and info.file_size / info.compress_size > max_ratio and info.file_size > 1 << 20:
                    raise UnsafeArchiveError(
                        f"{archive}: entry {name!r} expands {info.file_size / info.compress_size:.0f}x"
                    )
            if total > max_total_bytes:
                raise UnsafeArchiveError(
                    f"{archive}: {total} bytes uncompressed, more than the limit {max_total_bytes}"
                )
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise UnsafeArchiveError(f"{archive} is not a complete zip file ({err}); download it again") from err
    return [info for info in infos if not info.is_dir()]


def extract_archive(archive: Path, dest: Path, **limits) -> int:
    """Check `archive`, then extract it into `dest` (a staging folder: on error the caller discards it).

    Returns the number of files written. CRCs are verified while extracting.
    """
    infos = check_archive(archive, **limits)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in infos:
                zf.extract(info, dest)
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise UnsafeArchiveError(f"{archive} is damaged ({err}); download it again") from err
    return len(infos)
