"""Every environment variable visionops reads, declared once.

Config fields are overridable as ``VISIONOPS_<FIELD>`` (``VISIONOPS_EPOCHS=10``,
``VISIONOPS_BATCH_SIZE=256``); precedence is CLI flag > environment > recipe > defaults.

MLflow's own variables are left to MLflow, which reads them as it documents:
``MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db``), ``MLFLOW_EXPERIMENT_NAME`` /
``MLFLOW_EXPERIMENT_ID``, ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

CONFIG_ENV_PREFIX = "VISIONOPS_"

#: Set to ``plain`` or ``rich`` to force a progress style (default: rich on a TTY, else plain).
PROGRESS_STYLE = "VISIONOPS_PROGRESS"

#: A process's rank in a distributed job, set by torchrun and Ray Train; only rank 0 tracks.
RANK = "RANK"
#: The number of processes of a distributed job (torchrun).
WORLD_SIZE = "WORLD_SIZE"
#: A process's rank among those of its machine (torchrun): the GPU it uses.
LOCAL_RANK = "LOCAL_RANK"
#: torchrun's job id and restart count: a restarted job resumes the run it started.
ELASTIC_RUN_ID = "TORCHELASTIC_RUN_ID"
ELASTIC_RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"

#: Experiment used when neither the config nor MLflow's variables name one.
DEFAULT_EXPERIMENT = "visionops"


def config_env_var(field: str) -> str:
    """The environment variable that overrides config field ``field``."""
    return CONFIG_ENV_PREFIX + field.upper()


def config_overrides_from_env(
    fields: list[str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The config fields set through ``VISIONOPS_<FIELD>`` variables, as raw strings."""
    environ = os.environ if environ is None else environ
    return {f: environ[config_env_var(f)] for f in fields if config_env_var(f) in environ}


def mlflow_experiment_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether MLflow's own variables choose the experiment."""
    environ = os.environ if environ is None else environ
    return bool(environ.get("MLFLOW_EXPERIMENT_NAME") or environ.get("MLFLOW_EXPERIMENT_ID"))
