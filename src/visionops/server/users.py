"""Users and permissions on the team server, through MLflow's basic-auth REST API.

The caller authenticates as usual (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``):
an admin creates users; an admin, or a user with MANAGE on a resource, grants on it::

    admin = UserAdmin("http://mlflow.example.internal:5000")
    admin.create_user("alice", new_user_password(Path("alice.pw")))
    admin.grant("alice", admin.experiment("cifar10"), "EDIT")

Every MLflow error comes back as one ``UserAdminError`` line.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from visionops import env
from visionops.errors import VisionOpsError
from visionops.server.settings import PERMISSIONS

#: Where ``create-user`` finds the new user's password when no ``--password-file`` is given.
NEW_USER_PASSWORD_ENV = env.NEW_USER_PASSWORD.name

#: The permission MLflow stores for each level visionops offers. MLflow 3.17 refuses a
#: NO_PERMISSIONS grant on a resource (an absent grant plus the default permission already
#: means that); its DENY is the grant that takes reading away, whatever the default.
MLFLOW_PERMISSIONS: dict[str, str] = {
    "READ": "READ",
    "EDIT": "EDIT",
    "MANAGE": "MANAGE",
    "NO_PERMISSIONS": "DENY",
}

ResourceType = Literal["experiment", "registered_model"]


class UserAdminError(VisionOpsError):
    """A user or permission change the server refused, or one that cannot be sent."""


@dataclass(frozen=True)
class Resource:
    """What a grant applies to, as MLflow addresses it."""

    type: ResourceType
    id: str
    """the experiment ID, or the registered model's name"""
    label: str
    """how messages name it"""
    exists: bool = True
    name: str | None = None
    """the experiment's or registered model's name, for the grant hint of a 403"""

    def hint(self) -> dict[str, str | None]:
        """``tracking_error``'s names of what a refused grant was about."""
        key = "experiment" if self.type == "experiment" else "model"
        return {key: self.name}


@dataclass(frozen=True)
class GrantResult:
    username: str
    resource: Resource
    permission: str
    mlflow_permission: str
    replaced: bool
    """whether the user already had a grant on the resource (now replaced)"""
    created: bool = False
    """whether the grant created the (empty) registered model it names"""


class UserAdmin:
    """The basic-auth client for one server; credentials come from MLflow's variables."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        uri = tracking_uri or env.MLFLOW_TRACKING_URI.get()
        if not uri:
            raise UserAdminError(
                "no tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI"
            )
        if not uri.startswith(("http://", "https://")):
            raise UserAdminError(
                f"users and permissions live on a tracking server; {uri!r} is not an http(s):// URL"
            )
        from mlflow.server import get_app_client

        self.tracking_uri = uri.rstrip("/")
        self._auth = get_app_client("basic-auth", tracking_uri=self.tracking_uri)

    def create_user(self, username: str, password: str, admin: bool = False) -> dict[str, Any]:
        """Create ``username`` (and make it an admin); returns its id, name and admin flag."""
        with _translated(self.tracking_uri, f"creating user {username!r}", username):
            user = self._auth.create_user(username, password)
            if admin:
                self._auth.update_user_admin(username, True)
        return {"id": user.id, "username": user.username, "is_admin": admin}

    def experiment(self, name_or_id: str) -> Resource:
        """The experiment called ``name_or_id``, else the one with that ID."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri)
        with _translated(self.tracking_uri, f"looking up experiment {name_or_id!r}"):
            experiment = client.get_experiment_by_name(name_or_id)
            if experiment is None and name_or_id.isdigit():
                try:
                    experiment = client.get_experiment(name_or_id)
                except MlflowException as error:
                    if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
        if experiment is None:
            raise UserAdminError(
                f"no experiment named or numbered {name_or_id!r} on {self.tracking_uri}"
            )
        return Resource(
            "experiment",
            experiment.experiment_id,
            f"experiment {experiment.name!r} (id {experiment.experiment_id})",
            name=experiment.name,
        )

    def registered_model(self, name: str) -> Resource:
        """The registered model ``name``. It may not exist yet: ``grant`` then creates it."""
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        exists = True
        with _translated(self.tracking_uri, f"looking up registered model {name!r}"):
            try:
                client.get_registered_model(name)
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                exists = False
        return Resource("registered_model", name, f"registered model {name!r}", exists, name)

    def grant(self, username: str, resource: Resource, permission: str) -> GrantResult:
        """Give ``username`` ``permission`` on ``resource``, replacing an earlier grant.

        A registered model that does not exist yet is created (empty, owned by the caller)
        after the grant: MLflow gives MANAGE to whoever creates a model, overwriting their
        grant, so the grantee registering it first would turn EDIT (even DENY) into MANAGE.
        """
        mlflow_permission = _mlflow_permission(permission)
        from mlflow.exceptions import MlflowException

        with _translated(
            self.tracking_uri, f"granting on {resource.label}", username, **resource.hint()
        ):
            replaced = self._put_grant(username, resource, mlflow_permission)
            created = False
            if not resource.exists:
                from mlflow.tracking import MlflowClient

                client = MlflowClient(
                    tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
                )
                try:
                    client.create_registered_model(resource.id)
                    created = True
                except MlflowException as error:
                    if error.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    # Registered since we looked, maybe by the grantee: grant again.
                    self._put_grant(username, resource, mlflow_permission)
        return GrantResult(username, resource, permission, mlflow_permission, replaced, created)

    def _put_grant(self, username: str, resource: Resource, mlflow_permission: str) -> bool:
        """Grant, replacing an earlier grant; whether there was one."""
        from mlflow.exceptions import MlflowException

        try:
            self._auth.grant_user_permission(
                username, resource.type, resource.id, mlflow_permission
            )
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            # MLflow's per-user API has no update: replace the grant. Between the two calls
            # the user briefly falls back to the server's default permission.
            self._auth.revoke_user_permission(username, resource.type, resource.id)
            self._auth.grant_user_permission(
                username, resource.type, resource.id, mlflow_permission
            )
            return True
        return False

    def revoke(self, username: str, resource: Resource) -> bool:
        """Remove ``username``'s grant on ``resource``; False when there was none."""
        from mlflow.exceptions import MlflowException

        with _translated(
            self.tracking_uri, f"revoking on {resource.label}", username, **resource.hint()
        ):
            try:
                self._auth.revoke_user_permission(username, resource.type, resource.id)
            except MlflowException as error:
                # Both "no such user" and "no such grant" are RESOURCE_DOES_NOT_EXIST; only the
                # grant's message names the resource.
                if error.error_code == "RESOURCE_DOES_NOT_EXIST" and "Permission" in str(
                    error.message
                ):
                    return False
                raise
        return True


def _mlflow_permission(permission: str) -> str:
    try:
        return MLFLOW_PERMISSIONS[permission.upper()]
    except KeyError:
        raise UserAdminError(
            f"unknown permission {permission!r}; choose one of {', '.join(PERMISSIONS)}"
        ) from None


@contextmanager
def _translated(
    server: str,
    action: str,
    username: str | None = None,
    *,
    experiment: str | None = None,
    model: str | None = None,
) -> Iterator[None]:
    """Turn MLflow's exceptions (and unreachable servers) into one UserAdminError line; a
    403's grant hint names ``experiment`` or ``model``."""
    from mlflow.exceptions import MlflowException
    from requests import RequestException

    from visionops.tracking.connection import tracking_error, unreachable_message

    try:
        yield
    except MlflowException as error:
        # A refused login or permission, or no answer, reads as in every other command.
        refusal = tracking_error(error, server, experiment=experiment, model=model)
        if refusal is not None:
            raise UserAdminError(f"{action}: {refusal}") from error
        raise UserAdminError(_message(server, action, username, error)) from error
    except RequestException as error:
        raise UserAdminError(f"{action}: {unreachable_message(server, error)}") from error


def _message(server: str, action: str, username: str | None, error: Any) -> str:
    code = error.error_code
    detail = _first_line(str(error.message))
    if code == "RESOURCE_ALREADY_EXISTS" and username:
        return f"{action}: user {username!r} already exists"
    if code == "RESOURCE_DOES_NOT_EXIST" and username and "username" in detail:
        return f"{action}: no user {username!r} on {server}"
    return f"{action}: {detail}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "(no message)"


def new_user_password(
    password_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
) -> str:
    """The new user's password: ``password_file``, else ``VISIONOPS_NEW_USER_PASSWORD``, else a
    prompt on a terminal. Never a command-line argument: it would show in ``ps`` and history."""
    environ = os.environ if environ is None else environ
    stdin = sys.stdin if stdin is None else stdin
    if password_file is not None:
        try:
            # Only the line break an editor or `echo` adds is dropped; other whitespace counts.
            password = password_file.read_text().rstrip("\r\n")
        except OSError as error:
            raise UserAdminError(f"--password-file {password_file}: {error.strerror}") from error
        source = f"--password-file {password_file}"
    elif env.NEW_USER_PASSWORD.is_set(environ):
        password, source = environ[NEW_USER_PASSWORD_ENV], NEW_USER_PASSWORD_ENV
    elif stdin.isatty():
        password = getpass.getpass("new user's password: ")
        if getpass.getpass("repeat it: ") != password:
            raise UserAdminError("the two passwords differ")
        source = "the prompt"
    else:
        raise UserAdminError(
            f"no password for the new user: pass --password-file FILE, set "
            f"{NEW_USER_PASSWORD_ENV}, or run in a terminal to be prompted"
        )
    if not password:
        raise UserAdminError(f"the new user's password from {source} is empty")
    return password
