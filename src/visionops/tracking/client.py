"""MLflow clients for an explicit tracking URI; the process-wide URI stays the user's.

Library code never sets MLflow's process-wide tracking URI: it builds ``MlflowClient(uri)`` for
the URI a run or command uses, and downloads models with that URI passed explicitly::

    client = tracking_client(cfg.tracking.tracking_uri)     # None: the user's MLflow setting
    local = download_model("models:/vision-classifier/3", client.tracking_uri)

Two MLflow entry points ignore an explicit URI: logging a model (``mlflow.<flavor>.log_model``
creates MLflow 3's logged-model entity and registers it through the fluent API, with no URI
argument), and resolving a ``models:/`` URI (MLflow 3.17's models artifact repository looks the
model up with a default client, whatever ``download_artifacts`` was given). Only around those,
``process_tracking_uri`` points the process at the URI for the duration of the call and gives
the user's setting back afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

_TRACKING_URI_VARIABLE = "MLFLOW_TRACKING_URI"


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """``explicit``, else MLflow's own resolution (``mlflow.set_tracking_uri`` by the user,
    ``MLFLOW_TRACKING_URI``, else MLflow's default store)."""
    if explicit:
        return explicit
    import mlflow

    return str(mlflow.get_tracking_uri())


def tracking_client(explicit: str | None = None) -> MlflowClient:
    """A client of the tracking (and model registry) server at ``resolve_tracking_uri``."""
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(explicit)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def download_model(model_uri: str, tracking_uri: str, dst: Path | None = None) -> Path:
    """The model folder of ``model_uri`` (``models:/...``, ``runs:/...``) on local disk."""
    import mlflow

    with process_tracking_uri(tracking_uri):  # models:/ URIs: see the module docstring
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri,
            dst_path=str(dst) if dst else None,
            tracking_uri=tracking_uri,
            registry_uri=tracking_uri,
        )
    return Path(local)


def model_metadata(model_dir: Path) -> Model:
    """The ``MLmodel`` of a downloaded model: its run id, signature and flavors."""
    from mlflow.models import Model

    return Model.load(str(model_dir))


@contextmanager
def process_tracking_uri(uri: str) -> Iterator[None]:
    """Point the process at ``uri`` for the calls inside (model logging; see the module
    docstring), then restore the user's setting: the URI they set, or none at all."""
    import mlflow

    previous = os.environ.get(_TRACKING_URI_VARIABLE)
    previous_set = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        # set_tracking_uri also writes MLFLOW_TRACKING_URI (for subprocesses): put back both.
        mlflow.set_tracking_uri(previous_set)  # type: ignore[arg-type]  # None unsets it
        if previous is None:
            os.environ.pop(_TRACKING_URI_VARIABLE, None)
        else:
            os.environ[_TRACKING_URI_VARIABLE] = previous
