"""OmegaConf glue: the resolvers the configs use (registered on import), conversion to plain data, and the
structured configs (settings schemas) with their one-line refusals."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import operator
import re
import secrets
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import MISSING, Container, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from trustthepixels.metric_registry import metric_direction, metric_mode, metric_slug

S = TypeVar("S")
_SCHEMAS: dict[str, type] = {}  # config group -> its structured config
_COMMANDS: set[type] = set()  # the structured configs of whole commands (serve.yaml's)
_RULES: dict[type, Callable[[Any], None]] = {}  # schema -> the check of what neither its types nor fields can say
_CHECKS: dict[str, Callable[[Any, Any], bool]] = {  # a field's rules: what its type cannot say
    "low": operator.ge,
    "high": operator.le,
    "above": operator.gt,
    "below": operator.lt,
    "choices": lambda value, choices: value in choices,
}


# Backbones measured faster in float32 (TF32 matmuls) than under bf16 autocast below a batch size (docs/speed.md,
# GPU); the other backbones measured are faster in bf16 at every batch.
FLOAT32_BELOW_BATCH = {"tf_efficientnet_lite0": 256}


def auto_precision(backbone: str | None = None, batch_size: int | None = None) -> str:
    """On a GPU: bf16 autocast (fp16 where the GPU has no bf16), except where float32 was measured faster
    (FLOAT32_BELOW_BATCH). On a CPU float32, which bf16 did not beat (docs/speed.md, CPU)."""
    import torch  # here, not at the top: the entry points check the command line before anything heavy loads

    if not torch.cuda.is_available():
        return "32-true"
    if batch_size is not None and batch_size < FLOAT32_BELOW_BATCH.get(str(backbone), 0):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def auto_batch_size(accelerator: str = "auto") -> int:
    """Training images per step and device. 32 on a CPU. On a GPU 256, the fastest measured for every backbone
    (docs/speed.md, GPU), where it fits: 256 from 32 GiB of GPU memory, 128 from 16, else 64."""
    import torch

    if accelerator == "cpu" or not torch.cuda.is_available():
        return 32
    memory_gib = torch.cuda.get_device_properties(0).total_memory / 2**30
    return 256 if memory_gib >= 32 else 128 if memory_gib >= 16 else 64


def resolve_device(name: str) -> str:
    """device=auto: CUDA when there is one, else the CPU; any other value is torch's own device name."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def run_id() -> str:
    """A timestamp plus random suffix: two runs started in the same second still get their own directory."""
    return f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"


def run_dir_of(ckpt_path: str | None, new_dir: str) -> str:
    """The run directory a `<run>/checkpoints/*.ckpt` belongs to, so a resumed run continues in it
    (its checkpoints keep their best score, its TensorBoard curves stay one run); otherwise `new_dir`."""
    if ckpt_path:
        path = Path(ckpt_path).expanduser()
        if path.parent.name == "checkpoints" and path.is_file():
            return str(path.parent.parent)
    return new_dir


def register_resolvers() -> None:
    # use_cache: the id is drawn once per config; Hydra copies the cache into every job of a sweep.
    OmegaConf.register_new_resolver("run_id", run_id, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("run_dir_of", run_dir_of, replace=True)
    OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
    OmegaConf.register_new_resolver("auto_batch_size", auto_batch_size, replace=True)
    OmegaConf.register_new_resolver("not", lambda value: not value, replace=True)
    OmegaConf.register_new_resolver("metric_mode", metric_mode, replace=True)
    OmegaConf.register_new_resolver("metric_direction", metric_direction, replace=True)
    OmegaConf.register_new_resolver("metric_slug", metric_slug, replace=True)


def to_plain(value: Any) -> Any:
    """OmegaConf containers (which Hydra makes of every argument) to plain Python: checkpoints hold data only."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value


# ------------------------------------------------------------------------------------------ structured configs


def setting(use: str, default: Any = MISSING, **rules: Any) -> Any:
    """A structured config's field, the one declaration of a setting: its `default` (none: the config must set
    it), `use`, what it takes (the end of every message that refuses a value of it), and `rules` for what the type
    cannot say: low/high (inclusive bounds), above/below (strict ones), choices; each element of a list is held to
    them, and null always passes."""
    assert set(rules) <= set(_CHECKS), f"unknown rules {set(rules) - set(_CHECKS)}"
    metadata = {"use": use, "rules": rules}
    if isinstance(default, list | dict) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass
class CommandSettings:
    """What every command's structured config holds besides its own settings."""

    paths: Any = None  # the paths group (its own config)
    task_name: str = setting("a name for the run folder", "run")  # each command's YAML names its own


def register_schema(
    group: str | None, schema: type, rules: Callable[[Any], None] | None = None, name: str = "schema"
) -> None:
    """Store `schema` in Hydra's ConfigStore as `<group>/schema` (a group's YAML lists it first in its defaults),
    or as `name` for a command's whole config (group None): OmegaConf then checks every value's type as the config
    composes; its fields' rules, and `rules(settings)` for what only code can say, are checked by `validated`."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=group, name=name, node=schema)
    if group is None:
        _COMMANDS.add(schema)
    else:
        _SCHEMAS[group] = schema
    if rules is not None:
        _RULES[schema] = rules


def refusal(schema: type, name: str, value: Any, prefix: str = "") -> Exception:
    """The one-line refusal of `<prefix><name>=value` for a rule of `schema`, ending in what the setting takes."""
    from trustthepixels.errors import ConfigError

    return ConfigError(f"{prefix}{name}={value!r}: use {schema.__dataclass_fields__[name].metadata['use']}")


def check_value(schema: type, name: str, value: Any, prefix: str = "") -> None:
    """Refuse `value` of the setting `name` in one line if it breaks one of its field's rules."""
    rules = schema.__dataclass_fields__[name].metadata.get("rules", {})
    items = value if isinstance(value, list) else [value]
    if any(v is not None and not _CHECKS[rule](v, bound) for v in items for rule, bound in rules.items()):
        raise refusal(schema, name, value, prefix)


def _check(settings: Any, prefix: str) -> None:
    """Every field's rules (nested settings' too), then the schema's own rule."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            _check(value, f"{prefix}{f.name}.")
        else:
            check_value(type(settings), f.name, value, prefix)
    if type(settings) in _RULES:
        _RULES[type(settings)](settings)


def check_settings(cfg: Any) -> None:
    """The rules of every group of `cfg` that composed from a registered schema (a command's own `data:` block,
    say eval.yaml's, is another thing and is left alone): one ConfigError for the first value that cannot work."""
    from trustthepixels.target_check import check_target

    if not isinstance(cfg, Container):
        return
    if OmegaConf.get_type(cfg) in _COMMANDS:
        validated(OmegaConf.get_type(cfg), to_plain(cfg), "")
    for group, schema in _SCHEMAS.items():
        node = cfg.get(group)
        if isinstance(node, Container) and OmegaConf.get_type(node) is schema:
            validated(schema, to_plain(node), f"{group}.")
    trainer = cfg.get("trainer")
    if isinstance(trainer, Container) and "_target_" in trainer:  # Lightning's Trainer declares its own settings
        check_target(to_plain(trainer), "trainer.")
        check_accelerator(str(trainer.get("accelerator", "auto")))


def check_accelerator(accelerator: str) -> None:
    """A GPU asked for on a machine without one: one line before anything loads (Lightning would refuse it only
    when the Trainer is built, after the model)."""
    import torch

    from trustthepixels.errors import ConfigError

    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator}: this machine has no CUDA GPU that torch can use "
            f"(torch {torch.__version__}); train with trainer=cpu, or leave trainer at its default (auto)"
        )


def _field(schema: type, path: list[str]) -> dataclasses.Field | None:
    """The deepest field of `schema` along `path` (dotted parts, list indices dropped)."""
    found = None
    for part in path:
        fields = {f.name: f for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
        if part not in fields:
            break
        found = fields[part]
        hint = typing.get_type_hints(schema)[part]
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        schema = inner[0] if len(inner) == 1 else hint  # Optional[X] -> X, list[X] -> X
    return found


def settings_message(error: BaseException, schema: type | None = None, prefix: str = "") -> str | None:
    """One line for OmegaConf's refusal of a value against a structured config (the first such error behind
    `error`): the setting, the value and what the setting takes. `schema` and `prefix`: a config checked on its
    own (`data`); otherwise the field is the error's own, or found from the group named by the key."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, ValidationError | ConfigKeyError | MissingMandatoryValue):
        seen = seen.__cause__ or seen.__context__
    if seen is None or not isinstance(seen, OmegaConfBaseException) or not seen.full_key:
        return None
    full_key = f"{prefix}{seen.full_key}"
    owner = seen.object_type
    found = (
        {f.name: f for f in dataclasses.fields(owner)}.get(str(seen.key)) if dataclasses.is_dataclass(owner) else None
    )
    parts = re.sub(r"\[[^]]*\]", "", full_key).split(".")
    if found is None:  # an element of a list setting, or a key the setting does not have: the setting's own field
        if schema is None:
            schema, parts = _SCHEMAS.get(parts[0]), parts[1:]
        else:
            parts = parts[prefix.count(".") :]
        found = _field(schema, parts) if schema is not None else None
    use = found.metadata.get("use") if found is not None else None
    if use is None:
        return None
    if isinstance(seen, ConfigKeyError):
        return f"{full_key} is not a setting: {full_key[: -len(parts[-1]) - 1]} takes {use}"
    if isinstance(seen, MissingMandatoryValue):
        return f"{full_key} is required: set {full_key}= to {use}"
    return f"{full_key}={seen.value!r}: use {use}"


def validated(schema: type[S], values: Mapping[str, Any], prefix: str) -> S:
    """`values` as an instance of `schema` (a field left out takes its default), each converted to its field's
    type and held to its rules. A key the schema does not have, or a value that cannot be, is a ConfigError naming
    `prefix` + the setting (as the composed config would have refused it). Paths are taken as their text."""
    from trustthepixels.errors import ConfigError

    names = [f.name for f in dataclasses.fields(schema)]
    values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}  # a config holds paths as text
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"it takes {', '.join(names)}"
            raise ConfigError(f"{prefix}{key} is not a setting: {hint}")
    hints = typing.get_type_hints(schema)
    mappings = {
        n for n, h in hints.items() if dict in (typing.get_origin(h), *map(typing.get_origin, typing.get_args(h)))
    }
    try:
        typed = OmegaConf.merge(OmegaConf.structured(schema), {k: v for k, v in values.items() if k not in mappings})
        for key in mappings & set(values):  # a mapping given replaces the default (an optimizer's keys never mix)
            typed[key] = values[key]
        settings = OmegaConf.to_object(typed)
    except OmegaConfBaseException as error:
        raise ConfigError(settings_message(error, schema, prefix) or f"{prefix or 'settings '}{error}") from None
    _check(settings, prefix)
    return settings
