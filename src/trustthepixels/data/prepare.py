"""`prepare_data.py`: one function per source of a dataset folder (PrepareSettings has checked the settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustthepixels.config import to_plain
from trustthepixels.data.aligned.build import prepare_aligned
from trustthepixels.data.ingest.prepare import prepare_from_hf, prepare_from_release


def prepare(cfg) -> dict[str, Any]:
    """The published zip (release), the Hugging Face reduction (hf) or an aligned set (aligned)."""
    out = Path(cfg.out or Path(cfg.paths.data_dir) / ("aligned" if cfg.source == "aligned" else "dataset"))
    settings = to_plain(cfg)
    if cfg.source == "release":
        return prepare_from_release(out, **settings)
    if cfg.source == "hf":
        return prepare_from_hf(out, **settings)
    return prepare_aligned(out, **settings)
