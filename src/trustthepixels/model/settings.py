"""The `model` settings as a structured config: OmegaConf checks the types as the config composes (or as the
module is built from Python), `config.validated` the fields' rules and `check_model_settings` the optimizer; each
refusal names the setting and what it takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from trustthepixels.config import check_value, register_schema, setting
from trustthepixels.errors import ConfigError
from trustthepixels.target_check import check_target

FLIPS = ("none", "horizontal", "dihedral")


@dataclass
class ModelSettings:
    """configs/model/base/detector.yaml says what each setting does; its values are the defaults."""

    _target_: str = "trustthepixels.model.module.DetectorModule"
    _recursive_: bool = False  # the optimizer and scheduler reach the module as configs
    backbone: str = setting("a timm model name (timm.list_models()), e.g. model.backbone=resnet18")
    pretrained: bool = setting("true (ImageNet weights from the hub) or false")
    weights: Optional[str] = setting("the path of a weight file with timm's keys, or null")
    model_kwargs: dict[str, Any] = setting("a mapping of timm.create_model's keyword arguments")
    channels_last: bool = setting("true or false")
    flip: str = setting("horizontal, dihedral (flips and quarter turns) or none", choices=FLIPS)
    freeze_backbone: bool = setting("true (the classifier alone learns: a linear probe) or false")
    trainable_blocks: Optional[int] = setting(
        "the number of last blocks to fine-tune (0: the head only), or null to fine-tune everything", low=0
    )
    compile: bool = setting("true or false")
    optimizer: dict[str, Any] = setting("a _partial_ optimizer config, e.g. {_target_: torch.optim.AdamW, ...}")
    lr_batch: Optional[int] = setting(
        "the batch size optimizer.lr is set for (a whole number, 1 or more), or null to use lr as it is", low=1
    )
    scheduler: Optional[dict[str, Any]] = setting("a _partial_ scheduler config, or null")


def flip_mode(flip: bool | str) -> str:
    """`model.flip`: horizontal, none or dihedral. true and false, which older checkpoints hold, mean horizontal
    and none (a config takes the names only)."""
    mode = ("horizontal" if flip else "none") if isinstance(flip, bool) else flip
    check_value(ModelSettings, "flip", mode, "model.")
    return mode


def check_model_settings(s: ModelSettings) -> None:
    """The optimizer built on one parameter: a wrong value of it (lr=abc, a misspelt keyword) fails here as one
    line, not at the first training step after the data is set up."""
    import torch
    from hydra.utils import instantiate

    check_target(s.optimizer, "model.optimizer.")  # lr=abc: the optimizer's own signature says it takes a number
    try:
        instantiate(s.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
    except Exception as error:
        reason = error.__cause__ or error  # Hydra wraps what the target raised
        raise ConfigError(f"model.optimizer={s.optimizer}: {reason}") from None


register_schema("model", ModelSettings, check_model_settings)
