"""The project's settings schemas (structured configs), registered in Hydra's ConfigStore on import.

Hydra imports every module of the `hydra_plugins` namespace when it first composes a config, so `train.py`, the
compose API (tests, benchmarks, notebooks) and SLURM jobs all find each group's `<group>/schema` and each
command's `<command>_schema` without importing anything of ours first."""

from trustthepixels.data.audit.settings import AuditSettings
from trustthepixels.data.ingest.settings import PrepareSettings
from trustthepixels.data.loading.settings import DataSettings
from trustthepixels.evaluation.settings import CalibrateSettings, CompareSettings, EvalSettings
from trustthepixels.export.settings import ExportSettings
from trustthepixels.metrics.settings import AbstainSettings
from trustthepixels.model.settings import ModelSettings
from trustthepixels.prediction.settings import PredictSettings
from trustthepixels.serving.settings import ServeSettings

__all__ = [  # each registered by its own module, on import
    "AbstainSettings",
    "AuditSettings",
    "CalibrateSettings",
    "CompareSettings",
    "DataSettings",
    "EvalSettings",
    "ExportSettings",
    "ModelSettings",
    "PredictSettings",
    "PrepareSettings",
    "ServeSettings",
]
