"""Shared registry machinery: the client, user-facing errors, who acts and when."""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import PurePosixPath

from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from visionops import env
from visionops.config import redact_url
from visionops.errors import VisionOpsError
from visionops.tracking.client import tracking_client
from visionops.tracking.connection import tracking_error

# MLflow's own rules for alias names (mlflow.utils.validation), checked before anything is
# written so that a bad alias fails before the gate spends time measuring latency.
_ALIAS_PATTERN = re.compile(r"^[\w\-]+$")
_VERSION_ALIAS_PATTERN = re.compile(r"^[vV]\d+$")
#: The file every MLflow model folder holds: a version without it can neither load nor serve.
_MODEL_FILE = "MLmodel"


class RegistryError(VisionOpsError):
    """A registered model, version or alias is missing, or lacks what the workflow needs."""


def registry_client(tracking_uri: str | None) -> MlflowClient:
    """A registry client for ``tracking_uri`` (default: MLflow's own resolution)."""
    return tracking_client(tracking_uri)


@contextmanager
def mlflow_errors(action: str, tracking_uri: str, model: str | None = None) -> Iterator[None]:
    """Turn MLflow's exceptions (missing model, HTTP 401/403, ...) into one-line user errors;
    a 403's grant hint names ``model``, the registered model the work was about."""
    try:
        yield
    except MlflowException as exc:
        refusal = tracking_error(exc, tracking_uri, model=model)
        if refusal is not None:
            detail = str(refusal)
        else:
            text = str(exc.message).strip()
            detail = text.splitlines()[0] if text else repr(exc)
        raise RegistryError(f"{action}: {detail}") from exc


def check_alias(alias: str) -> None:
    if not _ALIAS_PATTERN.match(alias) or alias.lower() == "latest":
        raise RegistryError(
            f"invalid alias {alias!r}: use letters, digits, '_' and '-' (not 'latest')"
        )
    if _VERSION_ALIAS_PATTERN.match(alias):
        raise RegistryError(f"invalid alias {alias!r}: names like v1, v42 are reserved by MLflow")


def existing_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    """Version ``version`` of ``name``, ready to load; a clear error if it is not."""
    try:
        model_version = client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            registered_model(client, name)  # names a missing model rather than its version
            raise RegistryError(f"model {name!r} has no version {version}") from exc
        raise
    if model_version.status != "READY":
        raise RegistryError(
            f"version {version} of model {name!r} is {model_version.status}, not READY"
        )
    return model_version


def require_model_files(client: MlflowClient, model_version: ModelVersion) -> None:
    """A clear error unless the version's model files are in the artifact store.

    The registry outlives its files: a version registered on an in-memory S3 (``server start
    --local-s3-port``) that restarted still exists, READY, with nothing behind it. Checked
    before an alias moves, so that no alias points at a model nothing can load.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    name, version = model_version.name, model_version.version
    location = client.get_model_version_download_uri(name, version)
    repository = get_artifact_repository(
        location, tracking_uri=client.tracking_uri, registry_uri=client.tracking_uri
    )
    listed = {PurePosixPath(item.path).name for item in repository.list_artifacts()}
    if _MODEL_FILE not in listed:
        raise RegistryError(
            f"version {version} of {name!r} has no model files: no {_MODEL_FILE} at {location} "
            f"in the artifact store of {redact_url(client.tracking_uri)} (lost, e.g. with a "
            "local S3 that restarted, or never uploaded); register the model again"
        )


def require_permission_to_change(client: MlflowClient, model_version: ModelVersion) -> None:
    """Fail now, not after minutes of work, when the caller may not change the model.

    An update that changes nothing needs what moving an alias needs (EDIT on the registered
    model), so the server's own rules answer, whatever grant, role, default permission or admin
    flag applies; a local store has no permissions and simply accepts it.
    """
    description = model_version.description or ""
    client.update_model_version(model_version.name, model_version.version, description)


def version_exists(client: MlflowClient, name: str, version: str) -> bool:
    """False for a deleted version (MLflow keeps no trace of it but the number)."""
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def current_holder(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points to now, or None."""
    # The registered model lists its aliases; asking for a missing alias directly answers
    # INVALID_PARAMETER_VALUE, indistinguishable from a malformed request.
    holder = registered_model(client, name).aliases.get(alias)
    return None if holder is None else str(holder)


def registered_model(client: MlflowClient, name: str) -> RegisteredModel:
    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(f"no registered model is named {name!r}") from exc
        raise


def acting_user() -> str:
    """Who promotes: the tracking server user when there is one, else the OS user."""
    return env.MLFLOW_TRACKING_USERNAME.get() or getpass.getuser()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
