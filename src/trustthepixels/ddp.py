"""DDP under Hydra: every extra rank re-runs this job, in this job's directory.

Lightning starts ranks 1..N-1 by running the command line again with `hydra.run.dir` set to the run-dir
pattern. In a sweep (`-m`) that command line is the whole sweep, and the pattern is not the job's directory;
ranks would start sweeps of their own or write elsewhere. `job_command` rebuilds the command from this
job's own overrides instead, so a single run and every job of a sweep keep one directory, whatever the
number of ranks. Installed by `use_job_command()` (called by `train()`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd


def job_command(local_rank: int) -> tuple[list[str], str]:
    import __main__

    hydra = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, os.path.join(get_original_cwd(), sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += [f"--config-name={hydra.job.config_name}", *hydra.overrides.task]
    command += [
        f'hydra.run.dir="{hydra.runtime.output_dir}"',
        f"hydra.job.name={hydra.job.name}_ddp_rank_{local_rank}",
        "hydra.output_subdir=null",  # the job's .hydra/ is rank 0's
        "hydra.mode=RUN",
    ]
    return command, get_original_cwd()


_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "GLOBAL_RANK", "RANK")


@contextmanager
def ddp_session() -> Iterator[None]:
    """Leave no DDP state behind: the next job of a sweep, run in this same process, starts clean (Lightning
    sets LOCAL_RANK, MASTER_PORT, ... in os.environ and keeps the process group alive)."""
    saved = {key: os.environ.get(key) for key in _DDP_ENV}
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def use_job_command() -> None:
    from lightning.pytorch.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = job_command
