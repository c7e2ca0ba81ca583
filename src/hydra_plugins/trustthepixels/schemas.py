"""The project's settings schemas (structured configs), registered in Hydra's ConfigStore on import.

Hydra imports every module of the `hydra_plugins` namespace when it first composes a config, so `train.py`, the
compose API (tests, benchmarks, notebooks) and SLURM jobs all find `data/schema`, `model/schema`,
`abstain/schema` and `serve_schema` without importing anything of ours first."""

from trustthepixels.data.loading.settings import DataSettings
from trustthepixels.metrics.settings import AbstainSettings
from trustthepixels.model.settings import ModelSettings
from trustthepixels.serving.settings import ServeSettings

__all__ = ["AbstainSettings", "DataSettings", "ModelSettings", "ServeSettings"]  # each registered by its module
