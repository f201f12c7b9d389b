"""The stack starts for real: PostgreSQL databases, S3 bucket, authenticated server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from visionops.server.settings import ServerSettings

REPO = Path(__file__).resolve().parents[2]


def test_stack_answers_with_auth(shared_stack) -> None:
    search = f"{shared_stack.url}/api/2.0/mlflow/experiments/search?max_results=1000"
    assert requests.get(search, timeout=10).status_code == 401
    response = requests.get(search, auth=shared_stack.admin_auth, timeout=10)
    assert response.status_code == 200
    assert "Default" in {e["name"] for e in response.json()["experiments"]}
    buckets = [b["Name"] for b in shared_stack.s3_client().list_buckets()["Buckets"]]
    assert buckets == [shared_stack.bucket]


def test_auth_config_keeps_a_password_with_percent_signs(tmp_path, monkeypatch) -> None:
    from mlflow.server.auth.config import read_auth_config

    from visionops.server.process import write_auth_config
    from visionops.server.settings import ServerSettings

    settings = ServerSettings(admin_password="100%-sure-%(x)s-pass", state_dir=tmp_path)
    path = write_auth_config(settings)
    assert path.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(path))
    config = read_auth_config()  # as the server reads it
    assert config.admin_password == "100%-sure-%(x)s-pass"
    assert config.database_uri == settings.database_uri("mlflow_auth")
    assert config.auth_cache_ttl_seconds == 30  # a login's slow hash once per 30 s, not always


@pytest.fixture
def cli_settings(tmp_path, monkeypatch, free_port) -> Iterator[ServerSettings]:
    """The environment of `visionops server start` for a stack of its own (dropped after)."""
    from visionops.cli import main
    from visionops.server.databases import drop_databases

    tag = uuid.uuid4().hex[:8]
    for name, value in {
        "VISIONOPS_ADMIN_PASSWORD": "cli-check-password",
        "VISIONOPS_SERVER_PORT": str(free_port()),
        "VISIONOPS_SERVER_WORKERS": "1",
        "VISIONOPS_TRACKING_DB": f"visionops_test_{tag}",
        "VISIONOPS_AUTH_DB": f"visionops_test_{tag}_auth",
        "VISIONOPS_SERVER_STATE_DIR": str(tmp_path / "state"),
    }.items():
        monkeypatch.setenv(name, value)
    settings = ServerSettings.from_env()
    yield settings
    main(["server", "stop"])
    drop_databases(settings)


def test_cli_starts_and_stops_the_server_and_its_local_s3(
    cli_settings, tmp_path, capsys, free_port
) -> None:
    from visionops.cli import main

    settings = cli_settings
    assert main(["server", "start", "--detach", "--local-s3-port", str(free_port())]) == 0
    capsys.readouterr()
    assert main(["server", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert status["running"] is True
    s3_pid = int((tmp_path / "state" / "s3.pid").read_text())
    # Anonymous requests are refused: the auth app is in front.
    assert requests.get(f"{settings.url}/api/2.0/mlflow/experiments/search").status_code == 401

    assert main(["server", "stop"]) == 0
    assert main(["server", "status"]) == 1
    assert not requests_answer(settings.url)
    assert not alive(s3_pid), "server stop left the local S3 running"


def test_a_server_whose_pid_was_killed_is_still_found_stopped_and_restarted(
    cli_settings, tmp_path, capsys, free_port
) -> None:
    """kill -9 of the recorded pid leaves uvicorn answering in the same process group:
    status and stop find it (through the pid file, then with the pid file gone, through the
    port), and start works again. Also: the backup of a --local-s3-port server names that S3."""
    from visionops.cli import main
    from visionops.server.process import listeners

    settings = cli_settings
    s3_port = free_port()
    assert main(["server", "start", "--detach", "--local-s3-port", str(s3_port)]) == 0
    state = tmp_path / "state"

    backup = tmp_path / "backup"
    done = subprocess.run(
        [str(REPO / "scripts" / "ops" / "backup-mlflow.sh"), "--output", str(backup)],
        env={k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    artifacts = json.loads((backup / "manifest.json").read_text())["artifacts"]
    endpoint = f"--endpoint-url http://127.0.0.1:{s3_port}"
    assert artifacts["destination"] == "s3://mlflow-artifacts"
    assert artifacts["backup_command"] == (
        f"aws s3 sync {endpoint} s3://mlflow-artifacts BACKUP_DIR/artifacts"
    )
    assert f"aws s3 sync {endpoint} s3://mlflow-artifacts {backup}/artifacts" in done.stdout

    for pid_file_lost in (False, True):
        leader = int((state / "server.pid").read_text())
        os.kill(leader, signal.SIGKILL)
        wait_for(lambda pid=leader: not alive(pid), "the leader to die")
        assert requests_answer(settings.url), "nothing outlived the leader: no orphan to find"
        if pid_file_lost:
            (state / "server.pid").unlink()
        capsys.readouterr()
        assert main(["server", "status", "--json"]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[-1])["running"] is True
        assert main(["server", "stop"]) == 0
        assert listeners(settings.port) == []
        assert not requests_answer(settings.url)
        assert main(["server", "status"]) == 1
        if not pid_file_lost:
            assert main(["server", "start", "--detach"]) == 0
            assert requests_answer(settings.url)


def test_a_taken_local_s3_port_is_refused_naming_its_process(
    cli_settings, tmp_path, capsys, free_port
) -> None:
    """A leftover moto on the port is neither reused nor leaked, and no pid is recorded."""
    from visionops.cli import main
    from visionops.server.process import start_local_s3

    s3_port = free_port()
    leftover = start_local_s3("127.0.0.1", s3_port, tmp_path / "leftover.log")
    try:
        capsys.readouterr()
        assert main(["server", "start", "--detach", "--local-s3-port", str(s3_port)]) == 2
        err = capsys.readouterr().err
        # One line naming the port and the process (its command, cut to fit, in between).
        assert err.count("\n") == 1
        assert err.startswith(
            f"error: cannot start the local S3 on 127.0.0.1:{s3_port}: the port is in use by pid "
            f"{leftover.pid} ({sys.executable} -m moto"
        )
        assert err.endswith("); stop it or choose another --local-s3-port\n")
        assert not (tmp_path / "state" / "s3.pid").exists()
        assert not requests_answer(cli_settings.url)
        assert leftover.running()
    finally:
        leftover.stop()


def alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reaped if it is this process's child
        os.waitpid(pid, os.WNOHANG)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def requests_answer(url: str) -> bool:
    try:
        requests.get(f"{url}/health", timeout=2)
    except requests.RequestException:
        return False
    return True
