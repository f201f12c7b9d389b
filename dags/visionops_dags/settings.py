"""The pipelines' deployment settings: Airflow Variables, each with a default that works in a
checkout (``make quickstart``'s virtualenv and store).

Set one in the UI, with ``airflow variables set visionops_mode cluster``, or in the environment
of the Airflow processes as ``AIRFLOW_VAR_VISIONOPS_MODE=cluster``. Only ``visionops_mode`` is
read when a DAG file is parsed (it chooses the operator); the others are Jinja templates that a
task renders when it runs, so parsing never queries the metadata database for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The checkout these DAG files live in (dags/..): the default home of the local settings.
CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Setting:
    """One Airflow Variable and its default."""

    key: str
    default: str
    description: str

    def template(self) -> str:
        """The Jinja expression a templated operator field renders to this setting's value."""
        return f"{{{{ var.value.get({self.key!r}, {self.default!r}) }}}}"


MODE = Setting(
    "visionops_mode",
    "local",
    "local: each task runs the visionops CLI of a virtualenv on the Airflow worker; "
    "cluster: each task is a Kubernetes pod of the visionops image.",
)
EXECUTABLE = Setting(
    "visionops_executable",
    str(CHECKOUT / ".venv" / "bin" / "visionops"),
    "local: the visionops command of the visionops virtualenv.",
)
WORK_DIR = Setting(
    "visionops_work_dir",
    str(CHECKOUT),
    "local: the working folder of the commands (outputs/, tune-results/, a relative data dir).",
)
TRACKING_URI = Setting(
    "visionops_tracking_uri",
    f"sqlite:///{CHECKOUT / 'mlflow.db'}",
    "MLflow tracking URI, handed to the commands as MLFLOW_TRACKING_URI.",
)
IMAGE = Setting("visionops_image", "visionops:latest", "cluster: the visionops image.")
NAMESPACE = Setting("visionops_namespace", "default", "cluster: the namespace of the pods.")
ALERT_WEBHOOK_URL = Setting(
    "visionops_alert_webhook_url",
    "",
    "A Slack-compatible incoming webhook that hears of every failed task (empty: none).",
)

SETTINGS = (
    MODE,
    EXECUTABLE,
    WORK_DIR,
    TRACKING_URI,
    IMAGE,
    NAMESPACE,
    ALERT_WEBHOOK_URL,
)

LOCAL, CLUSTER = "local", "cluster"
MODES = (LOCAL, CLUSTER)


def deployment_mode() -> str:
    """``local`` or ``cluster``, read when the DAG file is parsed."""
    from airflow.sdk import Variable

    mode = str(Variable.get(MODE.key, default=MODE.default)).strip().lower()
    if mode not in MODES:
        raise ValueError(
            f"Airflow Variable {MODE.key}={mode!r} is not a mode; use one of {', '.join(MODES)}"
        )
    return mode
