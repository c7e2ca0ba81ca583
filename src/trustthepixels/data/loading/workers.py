"""How many DataLoader worker processes a `num_workers` setting means (every command that reads images)."""

from __future__ import annotations

import os

# On the H200 machine (16 cores) 8 workers decoded 3,315 img/s of 256-px JPEGs, below the 4,619 img/s resnet50
# trains at (bench/bench_gpu.py --decode): a GPU needs every core the machine has. The cap bounds the memory of
# the worker processes (each a Python process with torch loaded) on machines with many cores.
MAX_WORKERS = 32


def resolve_num_workers(setting: int | None) -> int:
    """null: every core but one, which stays with the main process (at most MAX_WORKERS)."""
    return min(MAX_WORKERS, max(0, (os.cpu_count() or 1) - 1)) if setting is None else int(setting)
