"""`data.root` as named sources: one folder, a list of folders, or a mapping name -> folder.

A union of sources is addressed by relative paths `<source>/<path in its folder>`; a single folder keeps its
plain relative paths, so splits, caches and checkpoints of one-folder runs are what they always were.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trustthepixels.config import to_plain
from trustthepixels.errors import ConfigError

Roots = dict[str, Path]


def parse_roots(root: Any) -> Roots:
    """{source name: folder} from `data.root`. A folder's name names it; a mapping names its sources itself."""
    if isinstance(root, str | Path):
        path = Path(root).expanduser()
        return {path.name or str(path): path}
    if isinstance(root, Mapping) and root:
        roots = {str(name): Path(folder).expanduser() for name, folder in root.items()}
    elif isinstance(root, list | tuple) and root and all(isinstance(r, str | Path) for r in root):
        roots = {}
        for folder in map(Path, root):
            name = folder.expanduser().name
            if name in roots:
                raise ConfigError(
                    f"data.root lists two folders named {name!r}: name them with a mapping, "
                    "e.g. data.root='{a: PATH1, b: PATH2}'"
                )
            roots[name] = folder.expanduser()
    else:
        raise ConfigError(
            f"data.root={root!r}: use a folder, a list of folders or a mapping name -> folder "
            "(each with AI/ and Real/ subfolders)"
        )
    bad = [name for name in roots if not name or "/" in name]
    if bad:
        raise ConfigError(f"data.root: source names must be non-empty and free of '/': {bad}")
    return roots


def is_union(roots: Roots) -> bool:
    return len(roots) > 1


def union_relpath(roots: Roots, source: str, relpath: str) -> str:
    """The key of a file in the union: its path in its folder, behind its source's name when there are several."""
    return f"{source}/{relpath}" if is_union(roots) else relpath


def source_of(roots: Roots, relpath: str) -> tuple[str, str]:
    """(source name, path inside its folder) of a union key (the inverse of `union_relpath`)."""
    if not is_union(roots):
        return next(iter(roots)), relpath
    source, _, rest = relpath.partition("/")
    return source, rest


def locate(roots: Roots, relpath: str) -> Path:
    """The file behind a union key."""
    source, rest = source_of(roots, relpath)
    return roots[source] / rest


def roots_state(roots: Roots) -> str | dict[str, str]:
    """How a checkpoint stores them: a plain path for one folder (as ever), a mapping for several."""
    return str(next(iter(roots.values()))) if not is_union(roots) else {k: str(v) for k, v in roots.items()}


def roots_from_state(state: Any) -> Roots | None:
    if not state:
        return None
    return parse_roots(state if isinstance(state, str) else dict(state))


def check_data_roots(root: Any, download: bool) -> None:
    """Every folder `data.root` names exists, or (one folder, download allowed) will be downloaded: checked before
    anything heavy loads (train.py checks it before Lightning is even imported), so that a wrong path is one line
    at once, not a hub timeout first."""
    roots = parse_roots(to_plain(root))
    missing = {name: folder for name, folder in roots.items() if not folder.exists()}
    if not missing:
        return
    if is_union(roots):
        named = ", ".join(f"{name}={folder}" for name, folder in missing.items())
        raise ConfigError(f"data.root: {named}: no such folder (each source is a folder with AI/ and Real/)")
    if not download:
        raise ConfigError(
            f"data.root={next(iter(missing.values()))} does not exist (and data.download=false). Set data.root to a "
            "folder with AI/ and Real/ subfolders, or data.download=true to fetch the published dataset."
        )
