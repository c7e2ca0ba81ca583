"""How many DataLoader worker processes a `num_workers` setting means (every command that reads images)."""

from __future__ import annotations

import os

# A GPU needs every core to decode JPEGs as fast as it trains (docs/speed.md, GPU); the cap bounds the memory of
# the worker processes (each a Python process with torch loaded) on machines with many cores.
MAX_WORKERS = 32


def resolve_num_workers(setting: int | None) -> int:
    """null: every core but one, which stays with the main process (at most MAX_WORKERS)."""
    return min(MAX_WORKERS, max(0, (os.cpu_count() or 1) - 1)) if setting is None else int(setting)
