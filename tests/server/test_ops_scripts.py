"""The operator scripts that need no backup: server logs, prerequisites, connection test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / script), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_logs_shows_the_end_of_the_server_log(tmp_path: Path) -> None:
    (tmp_path / "server.log").write_text("".join(f"line {n}\n" for n in range(1, 301)))
    result = run("ops/logs-mlflow.sh", "-n", "3", VISIONOPS_SERVER_STATE_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "line 298\nline 299\nline 300\n"
    default = run("ops/logs-mlflow.sh", VISIONOPS_SERVER_STATE_DIR=str(tmp_path))
    assert default.stdout.splitlines() == [f"line {n}" for n in range(201, 301)]


def test_logs_says_when_there_is_no_log(tmp_path: Path) -> None:
    result = run("ops/logs-mlflow.sh", VISIONOPS_SERVER_STATE_DIR=str(tmp_path / "nothing"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: no server log at {tmp_path / 'nothing'}/server.log")
    assert run("ops/logs-mlflow.sh", "-n", "many").returncode == 1


def test_logs_reads_the_state_folder_from_dotenv(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "server.log").write_text("from the .env state folder\n")
    # The autouse fixture runs each test in tmp_path, where the scripts look for .env.
    (tmp_path / ".env").write_text(f'# settings\nexport VISIONOPS_SERVER_STATE_DIR="{state}"\n')
    result = run("ops/logs-mlflow.sh")
    assert result.stdout == "from the .env state folder\n"


def test_check_prerequisites_fails_on_the_default_password_and_a_dead_postgres() -> None:
    result = run(
        "setup/check-prerequisites.sh",
        VISIONOPS_ADMIN_PASSWORD="password1234",
        VISIONOPS_POSTGRES_URI="postgresql://postgres@127.0.0.1:1",
    )
    assert result.returncode == 1
    status = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()[:7]}
    assert status == {
        "python": "OK",
        "mlflow": "OK",
        "psycopg": "OK",
        "boto3": "OK",
        "commands": "OK",
        "postgres": "FAIL",
        "admin": "FAIL",
    }
    assert "MLflow's default admin password" in result.stdout
    assert result.stdout.rstrip().endswith("2 check(s) failed")


def test_check_prerequisites_passes_on_the_test_stack(shared_stack) -> None:
    result = run(
        "setup/check-prerequisites.sh",
        VISIONOPS_ADMIN_PASSWORD=shared_stack.admin_auth[1],
        VISIONOPS_POSTGRES_URI=shared_stack.settings.postgres_uri,
    )
    assert result.returncode == 0, result.stdout
    assert result.stdout.rstrip().endswith("all checks passed")


def test_connection_test_logs_in_and_says_who_you_are(shared_stack) -> None:
    username, password = shared_stack.admin_auth
    result = run(
        "setup/test-connection.sh",
        MLFLOW_TRACKING_URI=shared_stack.url,
        MLFLOW_TRACKING_USERNAME=username,
        MLFLOW_TRACKING_PASSWORD=password,
    )
    assert result.returncode == 0, result.stderr
    assert "anonymous requests are refused (401)" in result.stdout
    assert f"you are '{username}' (admin) on {shared_stack.url}" in result.stdout
    # Without MLFLOW_TRACKING_*, the configured server and its admin.
    fallback = run(
        "setup/test-connection.sh",
        VISIONOPS_SERVER_PORT=str(shared_stack.settings.port),
        VISIONOPS_ADMIN_PASSWORD=password,
    )
    assert f"you are '{username}' (admin)" in fallback.stdout
    wrong = run(
        "setup/test-connection.sh",
        MLFLOW_TRACKING_URI=shared_stack.url,
        MLFLOW_TRACKING_USERNAME=username,
        MLFLOW_TRACKING_PASSWORD="not-the-password",
    )
    assert wrong.returncode == 1
    assert f"refused the login of '{username}' (401)" in wrong.stderr
