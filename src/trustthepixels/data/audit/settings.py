"""`audit_data.py`'s own settings, declared once as a structured config (each field's default and what it does;
the `data` group has its own): types checked as the config composes, the fields' rules before any image is read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustthepixels.config import CommandSettings, register_schema, setting


@dataclass
class AuditSettings(CommandSettings):
    data: Any = None  # the data group (its own schema)
    seed: int = setting("a whole number", 42)
    # Metadata-only balanced accuracy above this (chance: 0.5) is reported as a shortcut a classifier can take.
    cheat_threshold: float = setting("a balanced accuracy between 0.5 (chance) and 1, e.g. 0.6", 0.6, low=0.5, high=1)
    folds: int = setting("a number of cross-validation folds, 2 or more", 5, low=2)


register_schema(None, AuditSettings, name="audit_data_schema")
