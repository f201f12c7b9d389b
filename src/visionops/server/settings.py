"""The server stack's settings, read from the environment (the CLI loads ``.env`` first).

Every value has a default that runs on one machine: PostgreSQL on 127.0.0.1:5432, the
server on 127.0.0.1:5000, artifacts in a local folder unless an S3 endpoint is configured.
The admin password has no default on purpose: MLflow's own (``password1234``) is refused.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field

from visionops import env
from visionops.errors import VisionOpsError

#: MLflow's built-in admin password; a server that still uses it is open to anyone.
MLFLOW_DEFAULT_ADMIN_PASSWORD = "password1234"

PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")


class ServerConfigError(VisionOpsError):
    """The server stack cannot start with these settings."""


class ServerSettings(BaseModel):
    """What ``visionops server start`` runs; ``env_var`` names each field's variable."""

    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(5000, description="port to bind")
    workers: int = Field(2, ge=1, description="server processes")
    postgres_uri: str = Field(
        "postgresql://postgres@127.0.0.1:5432",
        description="PostgreSQL server (no database name)",
    )
    tracking_db: str = Field("mlflow", description="runs and registry")
    auth_db: str = Field("mlflow_auth", description="users and permissions")
    artifacts_destination: str | None = Field(
        None,
        description="s3://bucket/prefix or a folder "
        "(default: s3://mlflow-artifacts when MLFLOW_S3_ENDPOINT_URL is set, else "
        "STATE_DIR/artifacts)",
    )
    admin_username: str = Field("admin", description="the admin user created at first start")
    admin_password: str | None = Field(
        None,
        description="its password (required; or a file named by VISIONOPS_ADMIN_PASSWORD_FILE)",
        repr=False,
    )
    default_permission: str = Field(
        "READ",
        description="what users may do where nothing was granted",
    )
    auth_cache_s: int = Field(
        30,
        ge=0,
        description="seconds a server process trusts a login it verified (0: verify every "
        "request); another process may accept a changed password that long",
    )
    state_dir: Path = Field(
        Path(".visionops/server"),
        description="auth config, secret key, log and pid file",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            variable = env_var(name)
            if environ.get(variable):
                values[name] = environ[variable]
        password_file = env.ADMIN_PASSWORD_FILE.get(environ)
        if password_file and "admin_password" not in values:
            try:
                values["admin_password"] = Path(password_file).read_text().strip()
            except OSError as error:
                raise ServerConfigError(
                    f"VISIONOPS_ADMIN_PASSWORD_FILE={password_file}: {error.strerror}"
                ) from error
        return cls.model_validate(values)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def database_uri(self, database: str) -> str:
        return f"{self.postgres_uri.rstrip('/')}/{database}"

    def resolved_artifacts_destination(self, environ: Mapping[str, str] | None = None) -> str:
        environ = os.environ if environ is None else environ
        if self.artifacts_destination:
            return self.artifacts_destination
        if env.MLFLOW_S3_ENDPOINT_URL.is_set(environ):
            return "s3://mlflow-artifacts"
        return str((self.state_dir / "artifacts").resolve())

    def checked_admin_password(self) -> str:
        """The admin password, refusing none, MLflow's default, and anything short."""
        password = self.admin_password
        if not password:
            raise ServerConfigError(
                "no admin password: set VISIONOPS_ADMIN_PASSWORD or VISIONOPS_ADMIN_PASSWORD_FILE"
            )
        if password == MLFLOW_DEFAULT_ADMIN_PASSWORD:
            raise ServerConfigError(
                "refusing to start with MLflow's default admin password; "
                "choose another in VISIONOPS_ADMIN_PASSWORD or VISIONOPS_ADMIN_PASSWORD_FILE"
            )
        if len(password) < 12:
            raise ServerConfigError("the admin password needs at least 12 characters")
        return password

    def secret_key(self) -> str:
        """The Flask secret key for the auth app's CSRF protection, kept across restarts so
        every worker and every restart agree on it (MLFLOW_FLASK_SERVER_SECRET_KEY wins)."""
        configured = env.MLFLOW_FLASK_SERVER_SECRET_KEY.get()
        if configured:
            return configured
        path = self.state_dir / "flask-secret-key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        return path.read_text().strip()


def env_var(field: str) -> str:
    """The environment variable that sets ServerSettings field ``field``."""
    return _ENV_NAMES.get(field, f"VISIONOPS_{field.upper()}")


_ENV_NAMES = {
    "host": "VISIONOPS_SERVER_HOST",
    "port": "VISIONOPS_SERVER_PORT",
    "workers": "VISIONOPS_SERVER_WORKERS",
    "state_dir": "VISIONOPS_SERVER_STATE_DIR",
}
