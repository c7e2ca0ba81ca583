"""DDP under Hydra: every extra rank re-runs this job, in this job's directory.

Lightning starts ranks 1..N-1 by running the command line again (its subprocess launcher), built by its
`_hydra_subprocess_cmd`. In a sweep (`-m`) that command line is the whole sweep, and the run-dir pattern is not the
job's directory: ranks would start sweeps of their own or write elsewhere. `job_command` rebuilds the command
from this job's composed configuration instead: its config path and `--config-dir`, its task overrides and
its `hydra.*` overrides, in RUN mode, in the job's directory.

Lightning offers no public hook for this command, so `ddp_session` replaces that one function, only while a
job trains, only when the trainer launches ranks as subprocesses, and puts the original back afterwards. A
Lightning release without it fails with a message saying what to do (launch with `torchrun` instead: then
Lightning starts no process of its own and nothing is replaced).
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import lightning
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd
from lightning.pytorch import Trainer

# Hydra overrides a rank must not inherit: it runs one job (RUN mode) in the job's own directory.
_RANK_SETS = ("hydra.run.dir", "hydra.job.name", "hydra.output_subdir", "hydra.mode")
_SWEEP_ONLY = ("hydra.sweep", "hydra.sweeper", "hydra.launcher", "hydra/sweeper", "hydra/launcher")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def job_command(local_rank: int) -> tuple[list[str], str]:
    """The command line that re-runs this Hydra job as DDP rank `local_rank`, and the directory to run it in."""
    import __main__

    hydra = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, os.path.join(get_original_cwd(), sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    for source in hydra.runtime.config_sources:
        if source.schema == "file" and source.provider == "main":
            command.append(f"--config-path={source.path}")
        elif source.schema == "file" and source.provider == "command-line":
            command.append(f"--config-dir={source.path}")
    command.append(f"--config-name={hydra.job.config_name}")
    command += list(hydra.overrides.task)
    command += [
        o for o in hydra.overrides.hydra if not _key(o).startswith(_RANK_SETS) and not _key(o).startswith(_SWEEP_ONLY)
    ]
    command += [
        f'hydra.run.dir="{hydra.runtime.output_dir}"',
        f"hydra.job.name={hydra.job.name}_ddp_rank_{local_rank}",
        "hydra.output_subdir=null",  # the job's .hydra/ is rank 0's
        "hydra.mode=RUN",
    ]
    return command, get_original_cwd()


_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "GLOBAL_RANK", "RANK")


def _launches_subprocesses(trainer: Trainer) -> bool:
    launcher = trainer.strategy.launcher
    return launcher is not None and type(launcher).__name__ == "_SubprocessScriptLauncher"


@contextmanager
def _rank_command(trainer: Trainer) -> Iterator[None]:
    if not (HydraConfig.initialized() and _launches_subprocesses(trainer)):
        yield
        return
    from lightning.pytorch.strategies.launchers import subprocess_script

    original = getattr(subprocess_script, "_hydra_subprocess_cmd", None)
    if original is None or list(inspect.signature(original).parameters) != ["local_rank"]:
        raise RuntimeError(
            f"lightning {lightning.__version__} starts DDP ranks differently from the releases this project knows "
            "(2.2-2.6), so ranks would not find this Hydra job. Launch with torchrun instead "
            "(torchrun --nproc_per_node=N train.py trainer=ddp ...), or install lightning<2.7."
        )
    subprocess_script._hydra_subprocess_cmd = job_command
    try:
        yield
    finally:
        subprocess_script._hydra_subprocess_cmd = original


@contextmanager
def ddp_session(trainer: Trainer) -> Iterator[None]:
    """While a job trains: ranks started as subprocesses re-run this job (see `job_command`). Afterwards, no DDP
    state is left behind, so the next job of a sweep, run in this same process, starts clean (Lightning sets
    LOCAL_RANK, MASTER_PORT, ... in os.environ and keeps the process group alive)."""
    saved = {key: os.environ.get(key) for key in _DDP_ENV}
    try:
        with _rank_command(trainer):
            yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
