"""MLflow clients for an explicit tracking URI; the process-wide URI stays the user's.

Library code never sets MLflow's process-wide tracking URI: it builds ``MlflowClient(uri)`` for
the URI a run or command uses, and downloads models with that URI passed explicitly::

    client = tracking_client(cfg.tracking.tracking_uri)     # None: the user's MLflow setting
    local = download_model("models:/vision-classifier/3", client.tracking_uri)

Three MLflow entry points ignore an explicit URI: logging a model (``mlflow.<flavor>.log_model``
creates MLflow 3's logged-model entity with no URI argument), registering it
(``mlflow.register_model``, which ``register_model_version`` wraps), and resolving a
``models:/`` URI (MLflow 3.17's models artifact repository looks the model up with a default
client, whatever ``download_artifacts`` was given). Only around those, ``process_tracking_uri``
points the process at the URI for the duration of the call and gives the user's setting back
afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from visionops import env, names
from visionops.config import redact_url, split_url_credentials
from visionops.errors import ConfigError

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

    from visionops.config import TrainConfig

#: What ``process_tracking_uri`` changes for the calls inside, and restores after them.
_PROCESS_VARIABLES = (
    env.MLFLOW_TRACKING_URI.name,
    env.MLFLOW_EXPERIMENT_ID.name,
    env.MLFLOW_EXPERIMENT_NAME.name,
)


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """``explicit``, else MLflow's own resolution (``mlflow.set_tracking_uri`` by the user,
    ``MLFLOW_TRACKING_URI``, else MLflow's default store)."""
    if explicit:
        return explicit
    import mlflow

    return str(mlflow.get_tracking_uri())


def uri_for_workers(uri: str) -> str:
    """``uri``, refused if it holds a password: a URI that other processes get in their
    config (Ray Tune trials, Ray Train workers, a sweep's state file) is saved and shown.

    Raises:
        ConfigError: the URI holds a password (the CLI moves it to MLflow's variables first).
    """
    if split_url_credentials(uri)[2] is not None:
        raise ConfigError(
            f"tracking URI {redact_url(uri)} holds a password, which would be saved with the "
            "job's config; give the URI without user info and set "
            f"{env.MLFLOW_TRACKING_USERNAME.name} and {env.MLFLOW_TRACKING_PASSWORD.name}"
        )
    return uri


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


def signature_shape(metadata: Model, side: Literal["inputs", "outputs"]) -> list[int] | None:
    """The shape (-1 for a free dimension) of the one tensor a model's signature declares on
    ``side``, or None when the signature does not declare exactly one tensor there."""
    signature = metadata.signature
    schema = getattr(signature, side) if signature else None
    specs = schema.to_dict() if schema else []
    shape = specs[0].get("tensor-spec", {}).get("shape") if len(specs) == 1 else None
    return [int(dim) for dim in shape] if shape else None


def image_shape(metadata: Model) -> tuple[int, ...] | None:
    """One image as the model takes it, e.g. ``(3, 32, 32)``: the MLmodel's
    ``names.INPUT_SHAPE_METADATA_KEY``, else (models logged before it, whose signature is the
    tensor's) the signature's input shape without its batch axis; None unless one of them
    gives a fixed image size."""
    stored = _metadata(metadata).get(names.INPUT_SHAPE_METADATA_KEY)
    if stored is not None:
        shape = [int(dim) for dim in stored]
    else:
        signature = signature_shape(metadata, "inputs")
        shape = signature[1:] if signature else []
    if len(shape) < 1 or any(dim < 1 for dim in shape):
        return None
    return tuple(shape)


def model_classes(metadata: Model) -> tuple[str, ...] | None:
    """The class names of a model's outputs, in order (``names.CLASSES_METADATA_KEY``); None
    for a model logged without them."""
    classes = _metadata(metadata).get(names.CLASSES_METADATA_KEY)
    return tuple(str(name) for name in classes) if classes else None


def model_tta(metadata: Model) -> str:
    """The test-time augmentation evaluation applies to a model (a key of
    ``training.evaluate.TTA_MODES``; ``names.TTA_METADATA_KEY``), "none" when not recorded."""
    return str(_metadata(metadata).get(names.TTA_METADATA_KEY) or "none")


def serving_metadata(
    classes: Sequence[str], tta: str, input_shape: Sequence[int]
) -> dict[str, Any]:
    """The MLmodel metadata that ``model_classes``, ``model_tta`` and ``image_shape`` read."""
    return {
        names.CLASSES_METADATA_KEY: [str(name) for name in classes],
        names.TTA_METADATA_KEY: tta,
        names.INPUT_SHAPE_METADATA_KEY: [int(dim) for dim in input_shape],
    }


def _metadata(metadata: Model) -> dict[str, Any]:
    return metadata.metadata or {}


def run_config(run_id: str, tracking_uri: str) -> TrainConfig:
    """The training configuration run ``run_id`` logged (``names.RUN_CONFIG_ARTIFACT``).

    Raises:
        MlflowException, OSError: the run or its configuration cannot be read.
    """
    import mlflow

    from visionops.config import load_config

    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=names.RUN_CONFIG_ARTIFACT, tracking_uri=tracking_uri
    )
    return load_config(Path(local))


def run_experiment_name(client: MlflowClient, run_id: str | None) -> str | None:
    """The name of the experiment holding ``run_id`` (None for no run): where the runs that
    evaluate or optimise its models go by default."""
    if run_id is None:
        return None
    return str(client.get_experiment(client.get_run(run_id).info.experiment_id).name)


def register_model_version(
    model_uri: str, name: str, tracking_uri: str, tags: dict[str, Any] | None = None
) -> ModelVersion:
    """Register ``model_uri`` (a logged model) as a new version of registered model ``name``,
    created if need be, with ``tags`` set as the version is created.

    MLflow prints a notice to stderr for each registration ("Registered model 'NAME' already
    exists. Creating a new version of this model...", "Successfully registered model"), with
    ``print`` rather than a logger, so no log level reaches it: MLflow's event stream (its
    loggers' too) is off for this call. The command prints the version itself.
    """
    import mlflow
    from mlflow.utils import logging_utils

    was_enabled = logging_utils.MLFLOW_LOGGING_STREAM.enabled
    logging_utils.disable_logging()
    try:
        with process_tracking_uri(tracking_uri):  # see the module docstring
            return mlflow.register_model(model_uri, name, tags=tags)
    finally:
        if was_enabled:
            logging_utils.enable_logging()


@contextmanager
def process_tracking_uri(uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """Point the process at ``uri`` (and, when given, experiment ``experiment_id``) for the
    calls inside (model logging; see the module docstring), then restore the user's settings.

    The experiment matters to model logging: MLflow 3 creates the logged model in the active
    experiment, not in its run's, so without it a model lands in the Default experiment (and,
    on a local store, in the Default experiment's artifact folder).
    """
    import mlflow

    saved = {name: os.environ.get(name) for name in _PROCESS_VARIABLES}
    previous_set = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    if experiment_id is not None:
        # Read when no run is active; a name would win over the id, so it goes meanwhile.
        os.environ.pop(env.MLFLOW_EXPERIMENT_NAME.name, None)
        os.environ[env.MLFLOW_EXPERIMENT_ID.name] = experiment_id
    try:
        yield
    finally:
        # set_tracking_uri also writes MLFLOW_TRACKING_URI (for subprocesses): put back both.
        mlflow.set_tracking_uri(previous_set)  # type: ignore[arg-type]  # None unsets it
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
