"""How many DataLoader worker processes a `num_workers` setting means (every command that reads images)."""

from __future__ import annotations

import os


def resolve_num_workers(setting: int | None) -> int:
    """null: every core but one, which stays with the main process; more than 8 workers rarely helps a GPU."""
    return min(8, max(0, (os.cpu_count() or 1) - 1)) if setting is None else int(setting)
