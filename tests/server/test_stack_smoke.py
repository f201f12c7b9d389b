"""The stack starts for real: PostgreSQL databases, S3 bucket, authenticated server."""

from __future__ import annotations

import requests


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


def test_cli_starts_and_stops_the_server_and_its_local_s3(
    tmp_path, monkeypatch, capsys, free_port
) -> None:
    import json
    import os
    import uuid

    from visionops.cli import main
    from visionops.server.databases import drop_databases
    from visionops.server.settings import ServerSettings

    tag = uuid.uuid4().hex[:8]
    port, s3_port = free_port(), free_port()
    for name, value in {
        "VISIONOPS_ADMIN_PASSWORD": "cli-check-password",
        "VISIONOPS_SERVER_PORT": str(port),
        "VISIONOPS_SERVER_WORKERS": "1",
        "VISIONOPS_TRACKING_DB": f"visionops_test_{tag}",
        "VISIONOPS_AUTH_DB": f"visionops_test_{tag}_auth",
        "VISIONOPS_SERVER_STATE_DIR": str(tmp_path / "state"),
    }.items():
        monkeypatch.setenv(name, value)
    settings = ServerSettings.from_env()
    try:
        assert main(["server", "start", "--detach", "--local-s3-port", str(s3_port)]) == 0
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
        try:
            os.kill(s3_pid, 0)
            s3_alive = True
        except ProcessLookupError:
            s3_alive = False
        assert not s3_alive, "server stop left the local S3 running"
    finally:
        main(["server", "stop"])
        drop_databases(settings)


def requests_answer(url: str) -> bool:
    try:
        requests.get(f"{url}/health", timeout=2)
    except requests.RequestException:
        return False
    return True
