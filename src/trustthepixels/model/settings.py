"""The `model` settings, declared once: the structured config the `model` group composes onto and the module keeps.
OmegaConf checks the types as the config composes (or as the module is built from Python), `config.validated` the
fields' rules and `check_model_settings` the optimizer; each refusal names the setting and what it takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from trustthepixels.config import check_value, register_schema, setting
from trustthepixels.errors import ConfigError
from trustthepixels.target_check import check_target

FLIPS = ("none", "horizontal", "dihedral")
SCHEDULER = "trustthepixels.model.schedule.warmup_cosine"


@dataclass
class ModelSettings:
    """The `model` group: each setting's default and what it does. Each configs/model/*.yaml names a backbone and
    what differs for it; `python train.py --cfg job` prints them all."""

    _target_: str = "trustthepixels.model.module.DetectorModule"
    _recursive_: bool = (
        False  # the optimizer and scheduler reach the module as configs, instantiated when Lightning asks
    )
    # Any timm model name, hf-hub:org/name and local-dir:/path included.
    backbone: str = setting("a timm model name (timm.list_models()), e.g. model.backbone=resnet18")
    # true: ImageNet weights from the Hugging Face hub (needs a network). Offline: model.weights=PATH.
    pretrained: bool = setting("true (ImageNet weights from the hub) or false", True)
    # A local weight file with timm's keys (e.g. ../shared/weights/*.safetensors); overrides `pretrained`.
    weights: Optional[str] = setting("the path of a weight file with timm's keys, or null", None)
    model_kwargs: dict[str, Any] = setting("a mapping of timm.create_model's keyword arguments", {})
    # NHWC memory layout: faster convolutions on GPUs with tensor cores and on CPUs (ResNet, EfficientNet,
    # MobileNet; off for ViTs, where it does nothing).
    channels_last: bool = setting("true or false", True)
    # Random flips of training batches, done on the device: horizontal, none, or dihedral (the square's 8
    # symmetries: flips and quarter turns; for traces that do not depend on the picture's orientation).
    flip: str = setting("horizontal, dihedral (flips and quarter turns) or none", "horizontal", choices=FLIPS)
    # Train the classifier only (a linear probe); with data.feature_cache=true its features are computed once.
    freeze_backbone: bool = setting("true (the classifier alone learns: a linear probe) or false", False)
    # Fine-tune only the last N blocks (timm's coarse groups: stages of a CNN, blocks of a ViT) and the head; the
    # rest stays frozen, norms included. 0 is the linear probe above; null: fine-tune everything.
    trainable_blocks: Optional[int] = setting(
        "the number of last blocks to fine-tune (0: the head only), or null to fine-tune everything", None, low=0
    )
    # torch.compile the backbone (opt-in: minutes of compilation first; pays off on long GPU runs).
    compile: bool = setting("true or false", False)
    optimizer: dict[str, Any] = setting(
        "a _partial_ optimizer config, e.g. {_target_: torch.optim.AdamW, ...}",
        {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 3.0e-4, "weight_decay": 0.05},
    )
    # The batch size optimizer.lr is set for. Another data.batch_size (times the GPUs) scales it as timm's train.py
    # does: by the square root of the ratio for AdamW and the other adaptive optimizers, by the ratio for SGD.
    # null: lr is used as it is, whatever the batch.
    lr_batch: Optional[int] = setting(
        "the batch size optimizer.lr is set for (a whole number, 1 or more), or null to use lr as it is", 32, low=1
    )
    scheduler: Optional[dict[str, Any]] = setting(
        "a _partial_ scheduler config, or null",
        {"_target_": SCHEDULER, "_partial_": True, "warmup_fraction": 0.05, "min_lr_ratio": 0.01},
    )


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
