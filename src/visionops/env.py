"""Every environment variable visionops reads or sets, declared once, typed and documented.

Call sites ask a declaration (``env.RANK.get()``), never ``os.environ`` by name, so a variable's
type, default and meaning live here alone::

    >>> from visionops import env
    >>> env.RANK.get({"RANK": "3"}), env.RANK.get({})
    (3, 0)

Config fields are overridable as ``VISIONOPS_<FIELD>`` (``VISIONOPS_EPOCHS=10``,
``VISIONOPS_BATCH_SIZE=256``); precedence is CLI flag > environment > overrides file > recipe
> defaults. The team server's settings are ``VISIONOPS_SERVER_*`` / ``VISIONOPS_ADMIN_*``
(``visionops.server.settings``). MLflow reads its own variables itself; the ones visionops reads
too are declared here under MLflow's names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class EnvVar(Generic[T]):
    """One environment variable: its name, how its text is parsed, and its default."""

    name: str
    parse: Callable[[str], T]
    default: T
    description: str
    secret: bool = False  # never logged, forwarded to workers, or put on a command line

    def get(self, environ: Mapping[str, str] | None = None) -> T:
        """The parsed value, or the default when the variable is unset or empty."""
        text = environ_or_process(environ).get(self.name, "")
        return self.parse(text) if text else self.default

    def is_set(self, environ: Mapping[str, str] | None = None) -> bool:
        return bool(environ_or_process(environ).get(self.name))

    def set_default(self, value: str) -> None:
        """Set the variable for this process and its children unless the user set it."""
        os.environ.setdefault(self.name, value)


def environ_or_process(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    """``environ``, or this process's environment when None (tests pass their own)."""
    return os.environ if environ is None else environ


def _text(value: str) -> str | None:
    return value


# --- visionops -------------------------------------------------------------------------------
CONFIG_ENV_PREFIX = "VISIONOPS_"

PROGRESS = EnvVar(
    "VISIONOPS_PROGRESS",
    _text,
    None,
    "Progress display: rich, plain or off (default: rich on a terminal, else plain).",
)
NEW_USER_PASSWORD = EnvVar(
    "VISIONOPS_NEW_USER_PASSWORD",
    _text,
    None,
    "`visionops admin create-user`: the new user's password (else a prompt).",
    secret=True,
)
ALERTS_TOKEN = EnvVar(
    "VISIONOPS_ALERTS_TOKEN",
    _text,
    None,
    "`visionops alerts receive`: the bearer token Alertmanager must send (or --token-file).",
    secret=True,
)

# --- distributed jobs (set by torchrun and Ray Train) ----------------------------------------
RANK = EnvVar("RANK", int, 0, "A process's rank in a distributed job; only rank 0 tracks.")
WORLD_SIZE = EnvVar("WORLD_SIZE", int, 1, "The number of processes of a distributed job.")
LOCAL_RANK = EnvVar("LOCAL_RANK", int, 0, "A process's rank on its machine: the GPU it uses.")
ELASTIC_RUN_ID = EnvVar(
    "TORCHELASTIC_RUN_ID", _text, None, "torchrun's job id: a restarted job resumes its run."
)
ELASTIC_RESTART_COUNT = EnvVar(
    "TORCHELASTIC_RESTART_COUNT", int, 0, "How often torchrun has restarted the job's workers."
)
#: visionops sets it to 1 for its torchrun launches: torch 2.14 hands restarted workers a
#: stale rendezvous store otherwise (pytorch#135712).
SHARE_RDZV_STORE_OFF = EnvVar(
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE",
    _text,
    None,
    "Set to 1: each rendezvous round gets a fresh TCP store.",
)
#: cuBLAS needs a fixed workspace for deterministic results on CUDA (deterministic=true).
CUBLAS_WORKSPACE_CONFIG = EnvVar(
    "CUBLAS_WORKSPACE_CONFIG", _text, None, "cuBLAS workspace, ':4096:8' for determinism."
)

#: ``visionops serve --workers N``: the settings its worker processes start from.
SERVE_CONFIG = EnvVar(
    "VISIONOPS_SERVE_CONFIG", _text, None, "`visionops serve`: its settings, for its workers."
)
#: prometheus_client's own variable: where the workers of one server keep their metrics.
PROMETHEUS_MULTIPROC_DIR = EnvVar(
    "PROMETHEUS_MULTIPROC_DIR", _text, None, "Metrics of a multi-process server."
)

# --- Ray's ----------------------------------------------------------------------------------
#: Ray reads it once, when first imported; at 0 a Ray that the process starts itself (no
#: --address) takes 127.0.0.1 for its node address, and its servers then listen on loopback.
RAY_ENABLE_CLUSTER = EnvVar(
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
    _text,
    None,
    "Ray's switch: 0 keeps a local Ray (no --address) on 127.0.0.1; the CLI sets it to 0 "
    "unless set.",
)

# --- MLflow's variables that visionops reads too ---------------------------------------------
MLFLOW_TRACKING_URI = EnvVar(
    "MLFLOW_TRACKING_URI", _text, None, "Tracking server or store (default sqlite:///mlflow.db)."
)
MLFLOW_TRACKING_USERNAME = EnvVar(
    "MLFLOW_TRACKING_USERNAME", _text, None, "The account on the tracking server."
)
MLFLOW_TRACKING_PASSWORD = EnvVar(
    "MLFLOW_TRACKING_PASSWORD", _text, None, "Its password.", secret=True
)
MLFLOW_EXPERIMENT_NAME = EnvVar(
    "MLFLOW_EXPERIMENT_NAME", _text, None, "Experiment of new runs (after --experiment)."
)
MLFLOW_EXPERIMENT_ID = EnvVar(
    "MLFLOW_EXPERIMENT_ID", _text, None, "Experiment of new runs, by id (after the name)."
)
MLFLOW_RUN_ID = EnvVar(
    "MLFLOW_RUN_ID",
    _text,
    None,
    "The project run MLflow Projects hand their command (`mlflow run`): `visionops evaluate` "
    "nests its run under it.",
)

# --- MLflow's client retries: long-running commands set them (set_short_retry_policy) ---------
MLFLOW_HTTP_REQUEST_MAX_RETRIES = EnvVar(
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    int,
    7,
    "Retries of a failed request to the tracking server (MLflow's default 7 takes about 4 "
    "minutes against a server that is down); `alerts receive`, `serve` and the DAG tasks "
    "default it to 2.",
)
MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR = EnvVar(
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    int,
    2,
    "Seconds of the exponential backoff between retries (the 2nd waits 2x it, the 3rd 4x); "
    "those commands default it to 1.",
)
MLFLOW_HTTP_REQUEST_TIMEOUT = EnvVar(
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    int,
    120,
    "Seconds one request to the tracking server may wait for an answer; those commands "
    "default it to 20.",
)

#: What a process that must answer in seconds while the tracking server is down (the alert
#: receiver, serve's reload loop, the DAG tasks, which Airflow retries anyway) asks of
#: MLflow's client: a registry call fails within about 3 s against a closed port and within
#: 3 x 20 s + 3 s against a server that accepts and never answers, instead of 4 minutes.
SHORT_RETRY_POLICY: tuple[tuple[EnvVar[int], str], ...] = (
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES, "2"),
    (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, "1"),
    (MLFLOW_HTTP_REQUEST_TIMEOUT, "20"),
)


def set_short_retry_policy() -> None:
    """Set ``SHORT_RETRY_POLICY`` for this process and its children, each variable unless the
    user set it. Call it at a command's start: MLflow reads these from the environment only."""
    for var, value in SHORT_RETRY_POLICY:
        var.set_default(value)


# --- the team server's (visionops.server.settings reads the VISIONOPS_SERVER_* fields) --------
ADMIN_PASSWORD_FILE = EnvVar(
    "VISIONOPS_ADMIN_PASSWORD_FILE", _text, None, "A file holding the admin password."
)
MLFLOW_S3_ENDPOINT_URL = EnvVar(
    "MLFLOW_S3_ENDPOINT_URL", _text, None, "An S3 API other than AWS's (MinIO, a local S3)."
)
AWS_DEFAULT_REGION = EnvVar("AWS_DEFAULT_REGION", _text, None, "The S3 bucket's AWS region.")
MLFLOW_ARTIFACTS_PROGRESS_BAR = EnvVar(
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
    _text,
    None,
    "MLflow's download progress bars; the CLI sets it to false unless set, so a command's "
    "output is its own lines.",
)
MLFLOW_LOGGING_LEVEL = EnvVar(
    "MLFLOW_LOGGING_LEVEL",
    _text,
    None,
    "MLflow's log level; the CLI sets it to WARNING unless set, so MLflow's INFO lines (store "
    "migrations, system metrics) stay out of a command's output.",
)
MLFLOW_FLASK_SERVER_SECRET_KEY = EnvVar(
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    _text,
    None,
    "The auth app's Flask secret key (default: one kept in the server's state folder).",
    secret=True,
)

#: Experiment used when neither the config nor MLflow's variables name one.
DEFAULT_EXPERIMENT = "visionops"


def config_env_var(field: str) -> str:
    """The environment variable that overrides config field ``field``."""
    return CONFIG_ENV_PREFIX + field.upper()


def config_overrides_from_env(
    fields: list[str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The config fields set through ``VISIONOPS_<FIELD>`` variables, as raw strings."""
    environ = environ_or_process(environ)
    return {f: environ[config_env_var(f)] for f in fields if config_env_var(f) in environ}
