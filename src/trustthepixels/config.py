"""OmegaConf glue: the resolvers the configs use (registered on import) and conversion to plain data."""

from __future__ import annotations

import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import Container, OmegaConf


def auto_precision() -> str:
    """bf16 autocast on GPUs that support it, fp16 on older GPUs, fp32 on CPU (bench/bench_train.py, Lite0 on the
    2-core Xeon with AMX: bf16 0.73x fp32's speed at 112 px, about even at 224 px)."""
    import torch  # here, not at the top: the entry points check the command line before anything heavy loads

    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


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


# Metrics where lower is better; every other metric (AUROC, AP, accuracies, F1) is maximised.
_LOWER_IS_BETTER = ("loss", "ece", "error")


def metric_name(metric: str) -> str:
    """The metric itself in a logged name: val/auroc -> auroc, val/loss/cifake (one source's) -> loss."""
    parts = metric.split("/")
    return parts[1] if len(parts) > 1 else parts[0]


def metric_mode(metric: str) -> str:
    """ "min" or "max" for a metric name such as val/loss, val/auroc or val/loss/<source>: the checkpoint, early
    stopping, the sweep summary and the Optuna direction all follow it."""
    return "min" if metric_name(metric).startswith(_LOWER_IS_BETTER) else "max"


def metric_direction(metric: str) -> str:
    return {"min": "minimize", "max": "maximize"}[metric_mode(metric)]


def metric_slug(metric: str) -> str:
    """The name a checkpoint file carries its score under: val/auroc -> auroc, val/loss/cifake -> loss_cifake."""
    return "_".join(metric.split("/")[1:]) or metric


def register_resolvers() -> None:
    # use_cache: the id is drawn once per config; Hydra copies the cache into every job of a sweep.
    OmegaConf.register_new_resolver("run_id", run_id, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("run_dir_of", run_dir_of, replace=True)
    OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
    OmegaConf.register_new_resolver("metric_mode", metric_mode, replace=True)
    OmegaConf.register_new_resolver("metric_direction", metric_direction, replace=True)
    OmegaConf.register_new_resolver("metric_slug", metric_slug, replace=True)


def to_plain(value: Any) -> Any:
    """OmegaConf containers (which Hydra makes of every argument) to plain Python: checkpoints hold data only."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value
