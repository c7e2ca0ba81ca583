"""Output that tells a user nothing about their run: third-party lines silenced one by one at their source (never
every warning wholesale), each entry naming the library and why its line is noise here; progress bars drawn only
where someone watches."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")

# (module regex of the warning's origin, message regex, category); the fix is the library's, not the user's:
# - Lightning 2.6 calls torch 2.14's deprecated `LeafSpec()` in its own `_pytree` helper on every batch it moves;
# - diffusers 0.42 passes huggingface_hub a `local_dir_use_symlinks` argument it no longer takes, on every load.
WARNINGS = (
    (r"lightning\.pytorch\.utilities\._pytree", r".*isinstance\(treespec, LeafSpec\)", FutureWarning),
    (r"huggingface_hub\.utils\._validators", r"The `local_dir_use_symlinks` argument is deprecated", UserWarning),
)
# Logger names and the start of the lines dropped from them (a filter sees only its own logger's lines).
LOG_LINES = {
    # An advertisement printed by every Trainer that has no LitLogger.
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip:",),
}
# Whole libraries kept to warnings, their child loggers included: onnxscript's optimiser and onnx_ir's passes log
# one INFO line per folded constant, removed node or merged initializer (hundreds per export).
WARNINGS_ONLY = ("onnxscript", "onnx_ir", "timm")


class _DropLines(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...], below: int = logging.WARNING) -> None:
        super().__init__()
        self.prefixes, self.below = prefixes, below

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.below or not str(record.msg).startswith(self.prefixes)


def silence_third_party_noise() -> None:
    """Install the filters and levels above. timm's per-load INFO lines (the file it read, the classifier keys it
    expects to miss) go too: train.py says which weights it started from in one line of its own."""
    for module, message, category in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name, prefixes in LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(prefixes))
    for name in WARNINGS_ONLY:
        logging.getLogger(name).setLevel(logging.WARNING)


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    """Rich's progress bar on a terminal, erased when done; nothing at all in a log file or a pipe (where Rich
    would leave one empty line per bar)."""
    from rich.console import Console
    from rich.progress import track

    console = Console(stderr=True)
    return track(items, description, total=total, transient=True, console=console, disable=not console.is_terminal)
