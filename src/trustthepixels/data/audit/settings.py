"""`audit_data.py`'s own settings as a structured config (configs/audit_data.yaml says what each does; the `data`
group has its own): types checked as the config composes, the rules below before any image is read."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from trustthepixels.config import CommandSettings, refusal, register_schema, setting


@dataclass
class AuditSettings(CommandSettings):
    data: Any = None  # the data group (its own schema)
    seed: int = setting("a whole number")
    cheat_threshold: float = setting("a balanced accuracy between 0.5 (chance) and 1, e.g. 0.6")
    folds: int = setting("a number of cross-validation folds, 2 or more")


def check_audit_settings(s: AuditSettings) -> None:
    refuse = partial(refusal, AuditSettings)
    if not 0.5 <= s.cheat_threshold <= 1:
        raise refuse("cheat_threshold", s.cheat_threshold)
    if s.folds < 2:
        raise refuse("folds", s.folds)


register_schema(None, AuditSettings, check_audit_settings, name="audit_data_schema")
