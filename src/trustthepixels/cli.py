"""What every entry point (train.py, eval.py, ...) does around its one function: a user's mistake becomes one
short message naming the setting or file and the fix, never a traceback (`HYDRA_FULL_ERROR=1` shows it).

- `check_command_line` runs before Hydra: it quotes non-ASCII values (Hydra's grammar refuses them unquoted)
  and turns an override of a setting that does not exist into "did you mean ...?".
- `run` calls the task: a `UserError` (or a setting the code does not take) is printed as one line, the run
  folder is removed if nothing but Hydra's own files is in it (never a folder the user named that held anything
  before), and the exit status is 1. In a sweep the error
  is raised instead, so the sweep records the job as failed and goes on.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from trustthepixels.config import check_settings, settings_message
from trustthepixels.errors import ConfigError, UserError
from trustthepixels.quiet import silence_third_party_noise

log = logging.getLogger(__name__)
T = TypeVar("T")
TRACEBACK_HINT = "(HYDRA_FULL_ERROR=1 shows the traceback)"
_NEW_RUN_DIRS: set[Path] = set()  # run folders named on the command line that were absent or empty before it


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _fail(message: str) -> None:
    print(f"Error: {message}\n{TRACEBACK_HINT}", file=sys.stderr)
    raise SystemExit(1)


# ------------------------------------------------------------------------------------------ before Hydra runs


def _quote(value: str) -> str:
    if value[:1] in "'\"" or value.isascii():
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_non_ascii(argument: str) -> str:
    """`input=/photos/ünïcødé.jpg` -> `input='/photos/ünïcødé.jpg'` (each element of a `[a,b]` list alike)."""
    if argument.startswith("-") or "=" not in argument or argument.isascii():
        return argument
    key, value = argument.split("=", 1)
    if value.startswith("[") and value.endswith("]"):
        return f"{key}=[{','.join(_quote(v) for v in value[1:-1].split(','))}]"
    return f"{key}={_quote(value)}"


def _available(config_dir: Path, group: str) -> list[str]:
    folder = config_dir / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def explain_override_error(config_dir: Path, config_name: str, overrides: list[str], error: Exception) -> str | None:
    """A one-line explanation of a composition error, with the closest setting or option, or None."""
    from hydra import compose, initialize_config_dir

    typed = settings_message(error)  # a value of the wrong type for a structured config
    if typed:
        return typed
    text = str(error)
    missing = re.search(r"Could not override '([^']+)'", text)
    if missing:
        key = missing.group(1)
        rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
        parent, _, leaf = key.rpartition(".")
        try:
            with initialize_config_dir(str(config_dir), version_base="1.3"):
                cfg = compose(config_name, overrides=rest)
            node = OmegaConf.select(cfg, parent) if parent else cfg
        except Exception:
            return None
        keys = list(node.keys()) if isinstance(node, DictConfig) else []
        if leaf in keys:  # it exists, but a config group set it after the primary config: Hydra only adds to it
            groups = [o for o in rest if "=" in o and (config_dir / o.split("=", 1)[0].lstrip("+~")).is_dir()]
            by = f" ({', '.join(groups)} sets it)" if groups else ""
            if isinstance(OmegaConf.select(cfg, key), DictConfig):
                return (
                    f"{key} cannot be replaced here{by}: add an entry with +{key}.NAME=VALUE, "
                    f"or leave the group out and give the whole {key}=..."
                )
            return f"{key} cannot be overridden here{by}: use ++{key}=VALUE"
        close = difflib.get_close_matches(leaf, [str(k) for k in keys], n=1, cutoff=0.5)
        hint = f"did you mean {'.'.join(filter(None, [parent, close[0]]))}?" if close else f"its settings: {keys}"
        return f"{key} is not a setting: {hint} (`--cfg job` prints them all)"
    option = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
    if option:
        group, name = option.groups()
        choices = [c for c in _available(config_dir, group) if not c.startswith("_")]
        close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        return f"{group}={name} is not an option: {hint}choose one of {', '.join(choices)}"
    return None


def check_command_line(config_dir: Path, config_name: str, check: Callable[[DictConfig], None] | None = None) -> None:
    """Quote non-ASCII values in `sys.argv`, then refuse an override Hydra cannot apply with a hint; `check`
    looks at the composed config (a sweep's jobs would otherwise each fail with a traceback)."""
    sys.argv[1:] = [quote_non_ascii(a) for a in sys.argv[1:]]
    arguments = sys.argv[1:]
    for argument in arguments:  # a folder the user names for the run is never removed if it held anything
        key, _, value = argument.partition("=")
        if key.lstrip("+~") == "hydra.run.dir" and value:
            folder = Path(value.strip("'\"")).expanduser()
            if not folder.exists() or not any(folder.iterdir()):
                _NEW_RUN_DIRS.add(folder.resolve())
    if any(a.startswith("-") for a in arguments) or _full_error():  # -m, --cfg, --config-dir: Hydra's own way
        return
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(config_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=arguments)
    except Exception as error:
        message = explain_override_error(config_dir, config_name, arguments, error)
        if message:
            _fail(message)
        return
    if check is not None:
        try:
            check(cfg)
        except UserError as error:
            _fail(str(error))


# ------------------------------------------------------------------------------------------ while a task runs


def _user_error(error: BaseException) -> UserError | None:
    """The UserError behind `error` (Hydra wraps what a target raises), or one made of a setting the target
    does not take (`+data.batchsize=8`), or None."""
    seen = error
    while seen is not None:
        if isinstance(seen, UserError):
            return seen
        if isinstance(seen, TypeError) and isinstance(error, InstantiationException):
            return _unknown_argument(error, seen)
        if type(seen).__name__ == "MisconfigurationException":  # Lightning's word for settings that cannot work
            return ConfigError(f"trainer: {seen}")
        seen = seen.__cause__ or seen.__context__
    return None


def _unknown_argument(error: InstantiationException, cause: TypeError) -> UserError | None:
    name = re.search(r"unexpected keyword argument '([^']+)'", str(cause))
    target = re.search(r"call to target '([^']+)'", str(error))
    if not name or not target:
        return None
    from hydra.utils import get_object

    try:
        parameters = list(inspect.signature(get_object(target.group(1))).parameters)
    except (ImportError, ValueError, TypeError):
        parameters = []
    close = difflib.get_close_matches(name.group(1), parameters, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]}?" if close else f"it takes: {', '.join(p for p in parameters if p != 'self')}"
    return ConfigError(f"'{name.group(1)}' is not a setting of {target.group(1)}: {hint}")


def _remove_if_empty(run_dir: Path, user_named: bool, log_dir: Path | None = None) -> None:
    """A run that failed before doing anything leaves no folder behind: all it has is Hydra's config and log and
    the TensorBoard logger's first event file (no checkpoint, no metrics, no split); nor the folders Hydra made
    for it below `log_dir` (`<task>/runs/`) when they are left empty. A folder the user named (hydra.run.dir=...)
    is removed only if it was empty or absent before this command."""
    if not run_dir.is_dir() or (user_named and run_dir.resolve() not in _NEW_RUN_DIRS):
        return
    own = [p for p in run_dir.rglob("*") if p.is_file() and ".hydra" not in p.relative_to(run_dir).parts]
    if all(p.suffix == ".log" or p.name.startswith("events.out.tfevents.") for p in own):
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            for handler in list(getattr(logger, "handlers", [])):  # the log file goes with the folder
                if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(run_dir):
                    logger.removeHandler(handler)
                    handler.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        parent = run_dir.parent.resolve()
        inside = log_dir.resolve() if log_dir is not None and not user_named else None
        while inside is not None and parent != inside and parent.is_relative_to(inside) and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def run(task: Callable[[DictConfig], T], cfg: DictConfig) -> T:
    import torch

    # One float32 matmul precision for every command (train.yaml's `matmul_precision`, "high" for the others):
    # on a GPU, TF32 in training's validation but full float32 in eval.py would move logits in the 4th digit.
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))
    silence_third_party_noise()
    try:
        check_settings(cfg)  # the rules of the data, model and abstain settings, before anything slow
        return task(cfg)
    except KeyboardInterrupt:
        if _full_error():
            raise
        _clean_up(cfg)  # the outputs are written whole (atomically) or not at all
        print("Stopped (Ctrl-C).", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        user_error = _user_error(error)
        if user_error is None or _full_error():
            raise
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        if multirun:
            raise user_error from None
        _clean_up(cfg)
        _fail(str(user_error))
        raise  # unreachable: _fail exits


def _clean_up(cfg: DictConfig) -> None:
    """The run folder of a command that stopped before writing anything, as `_remove_if_empty` says."""
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        user_named = any(o.split("=", 1)[0].lstrip("+~") == "hydra.run.dir" for o in hydra.overrides.hydra)
        log_dir = OmegaConf.select(cfg, "paths.log_dir", default=None)
        _remove_if_empty(Path(hydra.runtime.output_dir), user_named, Path(log_dir) if log_dir else None)


def entry_point_config_dir(file: str) -> Path:
    return Path(file).resolve().parent / "configs"
