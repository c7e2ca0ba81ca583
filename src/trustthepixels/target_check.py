"""A `_target_` config held to its target's own signature before anything is built: a misspelt key or a value of
the wrong type (`trainer.max_epochs=abc`, `model.optimizer.lr=abc`, `+data.batchsize=8`) is one line naming the
setting and what it takes, instead of a traceback after the model has loaded or the data was scanned. The
signature is the declaration (Lightning's Trainer, torch's optimizers): nothing here repeats it."""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from collections.abc import Mapping
from typing import Any

from trustthepixels.errors import ConfigError


def check_target(node: Mapping[str, Any], prefix: str) -> None:
    """Refuse a key the target does not take (with the closest one it does) and a value its type hint refuses.
    `node` is plain data (resolved); a target that takes **kwargs accepts any key."""
    from hydra.utils import get_object

    try:
        target = get_object(str(node["_target_"]))
    except Exception:  # Hydra's own instantiate will say what is wrong with the target itself
        return
    function = target.__init__ if inspect.isclass(target) else target
    try:
        parameters = {n: p for n, p in inspect.signature(function).parameters.items() if n != "self"}
    except (TypeError, ValueError):
        return
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # a hint that does not resolve here: keys are still checked
        hints = {}
    for key, value in node.items():
        if key.startswith("_"):
            continue
        if key not in parameters:
            if takes_any:
                continue
            close = difflib.get_close_matches(key, list(parameters), n=1, cutoff=0.5)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"it takes {', '.join(parameters)}"
            raise ConfigError(f"{prefix}{key} is not a setting: {hint}")
        if key in hints and not fits(value, hints[key]):
            raise ConfigError(f"{prefix}{key}={value!r}: use {describe(hints[key])}")


def fits(value: Any, hint: Any) -> bool:
    """Whether a config value (plain data) can be what `hint` says. Hints it cannot judge (classes a config cannot
    hold, callables, type variables) pass: this refuses only what is certainly wrong."""
    if hint is Any or (isinstance(value, Mapping) and "_target_" in value):
        return True
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in arguments)
    if origin is typing.Literal:
        return value in arguments
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if container in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        return isinstance(value, list | tuple)
    if container in (dict, collections.abc.Mapping):
        return isinstance(value, Mapping)
    if isinstance(hint, type) and isinstance(value, str | int | float | bool | list | dict | type(None)):
        return isinstance(value, hint)  # a Tensor, timedelta, Accelerator...: a plain value is none of them
    return True


def describe(hint: Any) -> str:
    """What a hint takes, in a config's words: `a whole number or null`."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        literals = [v for a in arguments if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
        named = [describe(a) for a in arguments if typing.get_origin(a) is not typing.Literal]
        if literals:
            named.insert(0, "one of " + ", ".join(dict.fromkeys(str(v) for v in literals)))
        return " or ".join(dict.fromkeys(n for n in named if n))
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in arguments)
    words = {int: "a whole number", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    if hint in words:
        return words[hint]
    container = origin or hint
    if container in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        return "a list"
    if container in (dict, collections.abc.Mapping):
        return "a mapping"
    return ""  # a class a config cannot hold: not worth naming
