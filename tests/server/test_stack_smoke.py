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
