"""deploy/compose runs the same server as ``make server``, with no password in its files.

No Docker engine runs where the tests do, so the stack is checked as files: the compose YAML,
the server image's pinned versions (deploy/docker/server.Dockerfile), and the entrypoint that
turns Docker secrets into MLflow's config. tests/deploy/test_images.py checks the image itself.
"""

from __future__ import annotations

import configparser
import itertools
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from visionops import __version__
from visionops.server.process import server_command
from visionops.server.settings import MLFLOW_DEFAULT_ADMIN_PASSWORD, ServerSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
TOOLS_COMPOSE = DEPLOY.parent / ".tools" / "bin" / "docker-compose"
SERVER_DOCKERFILE = DEPLOY / "docker" / "server.Dockerfile"
ENTRYPOINT = DEPLOY / "docker" / "server-entrypoint.sh"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE_DIR / "docker-compose.yml").read_text())


def _options(command: list[str]) -> dict[str, str]:
    """``--flag value`` pairs of a command line."""
    return {flag: value for flag, value in itertools.pairwise(command) if flag.startswith("--")}


def test_mlflow_service_runs_what_visionops_server_start_runs() -> None:
    command = _compose()["services"]["mlflow"]["command"]
    assert command[:2] == ["mlflow", "server"]
    options = _options(command)
    assert options["--app-name"] == "basic-auth"
    assert options["--backend-store-uri"] == "postgresql://mlflow@postgres:5432/mlflow"
    assert options["--artifacts-destination"].startswith("s3://")
    assert options["--host"] == "0.0.0.0"
    native = server_command(
        ServerSettings(artifacts_destination="s3://mlflow-artifacts"), environ={}
    )
    # The same flags as the native server (python -m mlflow server ...), so the two cannot drift.
    assert native[1:4] == ["-m", "mlflow", "server"]
    assert set(options) == set(_options(native))


def test_mlflow_service_takes_its_secrets_from_files_and_waits_for_its_dependencies() -> None:
    compose = _compose()
    mlflow = compose["services"]["mlflow"]
    environment = mlflow["environment"]
    assert environment["MLFLOW_AUTH_CONFIG_PATH"].endswith("basic_auth.ini")
    assert environment["ADMIN_PASSWORD_FILE"] == "/run/secrets/admin_password"
    assert environment["FLASK_SECRET_KEY_FILE"] == "/run/secrets/flask_secret_key"
    assert environment["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert environment["AUTH_DATABASE_URI"] == "postgresql://mlflow@postgres:5432/mlflow_auth"
    assert set(mlflow["secrets"]) == {"admin_password", "flask_secret_key", "postgres_password"}
    assert all("file" in secret for secret in compose["secrets"].values())
    assert mlflow["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "create-bucket": {"condition": "service_completed_successfully"},
    }
    assert compose["services"]["create-bucket"]["depends_on"] == {
        "minio": {"condition": "service_healthy"}
    }
    for name in ("postgres", "minio", "mlflow"):
        assert compose["services"][name]["healthcheck"]["test"], name
    assert "mc mb --ignore-existing" in compose["services"]["create-bucket"]["command"][0]
    assert compose["services"]["postgres"]["image"] == "postgres:16"
    initdb = (COMPOSE_DIR / "initdb" / "01-databases.sql").read_text()
    assert re.findall(r"CREATE DATABASE (\w+);", initdb) == ["mlflow", "mlflow_auth"]


def _committed_files() -> list[Path]:
    # secrets/ holds an operator's real secrets (git ignores them); everything else is shipped.
    return [
        path
        for path in COMPOSE_DIR.rglob("*")
        if path.is_file() and (path.parent.name != "secrets" or path.name == ".gitignore")
    ]


def test_no_password_literal_in_the_compose_files() -> None:
    files = _committed_files()
    assert {path.name for path in files} >= {"docker-compose.yml", "README.md", ".env.example"}
    for path in [*files, SERVER_DOCKERFILE, ENTRYPOINT]:
        assert MLFLOW_DEFAULT_ADMIN_PASSWORD not in path.read_text(), path
    # Every password-like variable is an interpolation from .env or a path to a secret.
    for service in _compose()["services"].values():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key or "SECRET" in key:
                assert str(value).startswith(("${", "/run/secrets/")), (key, value)


def test_image_pins_the_versions_this_repository_runs() -> None:
    """The image installs these by name, at the versions of requirements.lock (its -c file);
    tests/deploy/test_images.py checks that derivation."""
    dockerfile = SERVER_DOCKERFILE.read_text()
    assert "-c lock-pins.txt" in dockerfile and "requirements.lock > lock-pins.txt" in dockerfile
    assert not re.findall(r"==[0-9]", dockerfile)  # no version besides the lock's
    lock = (DEPLOY.parent / "requirements.lock").read_text()
    for name, extra in (("mlflow", "[auth]"), ("psycopg", "[binary]"), ("boto3", "")):
        assert f'"{name}{extra}"' in dockerfile or f" {name}\n" in dockerfile, name
        assert re.search(rf"^{name}==", lock, re.MULTILINE), f"requirements.lock lacks {name}"
    # Tagged with the project's version, as the other visionops images; MLflow's is pinned above.
    assert _compose()["services"]["mlflow"]["image"] == f"visionops/server:{__version__}"


def _run_entrypoint(tmp_path: Path, admin_password: str) -> subprocess.CompletedProcess[str]:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "admin").write_text(admin_password + "\n")
    (secrets / "flask").write_text("flask-key\n")
    (secrets / "postgres").write_text("pg-secret\n")
    env = {
        "PATH": os.environ["PATH"],
        "ADMIN_PASSWORD_FILE": str(secrets / "admin"),
        "FLASK_SECRET_KEY_FILE": str(secrets / "flask"),
        "POSTGRES_PASSWORD_FILE": str(secrets / "postgres"),
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "basic_auth.ini"),
        "AUTH_DATABASE_URI": "postgresql://mlflow@postgres:5432/mlflow_auth",
        "ADMIN_USERNAME": "admin",
        "DEFAULT_PERMISSION": "READ",
    }
    probe = 'printf "%s %s" "$PGPASSWORD" "$MLFLOW_FLASK_SERVER_SECRET_KEY"'
    return subprocess.run(
        ["sh", str(ENTRYPOINT), "sh", "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_entrypoint_writes_the_auth_config_from_the_secret(tmp_path: Path) -> None:
    password = "a-long-admin-pass%with-percent"
    result = _run_entrypoint(tmp_path, password)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "pg-secret flask-key"
    ini = tmp_path / "basic_auth.ini"
    assert stat.S_IMODE(ini.stat().st_mode) == 0o600
    config = configparser.ConfigParser()  # as mlflow.server.auth.config reads it
    config.read(ini)
    assert dict(config["mlflow"]) == {
        "default_permission": "READ",
        "database_uri": "postgresql://mlflow@postgres:5432/mlflow_auth",
        "admin_username": "admin",
        "admin_password": password,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds": "30",
    }


@pytest.mark.parametrize(
    ("password", "message"),
    [(MLFLOW_DEFAULT_ADMIN_PASSWORD, "default admin password"), ("short-one", "12 characters")],
)
def test_entrypoint_refuses_weak_admin_passwords(
    tmp_path: Path, password: str, message: str
) -> None:
    result = _run_entrypoint(tmp_path, password)
    assert result.returncode == 1
    assert message in result.stderr
    assert not (tmp_path / "basic_auth.ini").exists()


def test_compose_file_validates(tmp_path: Path) -> None:
    """``docker compose config`` where a Compose client is installed (no engine needed)."""
    if (
        shutil.which("docker")
        and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30
        ).returncode
        == 0
    ):
        compose = ["docker", "compose"]
    elif shutil.which("docker-compose"):
        compose = ["docker-compose"]
    elif TOOLS_COMPOSE.exists():  # make deploy-tools installs one
        compose = [str(TOOLS_COMPOSE)]
    else:
        pytest.skip("no Docker Compose client on this machine")
    # The repository's layout: the server image builds from the root, two folders up.
    project = tmp_path / "deploy" / "compose"
    shutil.copytree(COMPOSE_DIR, project, ignore=shutil.ignore_patterns(".env"))
    shutil.copytree(DEPLOY / "docker", tmp_path / "deploy" / "docker")
    (project / ".env").write_text("MINIO_ROOT_USER=test\nMINIO_ROOT_PASSWORD=test-minio-key\n")
    for name in ("postgres_password", "admin_password", "flask_secret_key"):
        (project / "secrets" / name).write_text("not-a-real-secret\n")
    result = subprocess.run(
        [*compose, "-f", str(project / "docker-compose.yml"), "config"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["services"]["mlflow"]["environment"]["AWS_ACCESS_KEY_ID"] == "test"
    build = resolved["services"]["mlflow"]["build"]
    assert Path(build["context"]).resolve() == tmp_path.resolve()
    assert build["dockerfile"] == "deploy/docker/server.Dockerfile"
    assert "not-a-real-secret" not in result.stdout
