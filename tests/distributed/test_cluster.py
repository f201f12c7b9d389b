"""What reaches Ray's worker processes: the allow-listed settings, never a secret."""

from __future__ import annotations

import pytest

from visionops import env
from visionops.distributed.cluster import WORKER_SETTINGS, ray_session, worker_runtime_env

SECRETS = {
    "VISIONOPS_ADMIN_PASSWORD": "admin-secret-123",
    "MLFLOW_TRACKING_PASSWORD": "tracking-secret-456",
    "MLFLOW_TRACKING_TOKEN": "token-secret-789",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-abc",
    "AWS_SESSION_TOKEN": "aws-session-def",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-secret-ghi",
}
SETTINGS = {
    "MLFLOW_TRACKING_URI": "http://tracking.example:5000",
    "MLFLOW_EXPERIMENT_NAME": "team",
    "MLFLOW_S3_ENDPOINT_URL": "http://minio.example:9000",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "VISIONOPS_PROGRESS": "plain",
}


def test_only_the_allow_list_travels_in_the_runtime_env() -> None:
    environ = {**SECRETS, **SETTINGS, "VISIONOPS_LR": "0.3", "HOME": "/root"}
    runtime_env = worker_runtime_env("some.module.hook", environ)
    assert runtime_env["env_vars"] == SETTINGS
    assert runtime_env["worker_process_setup_hook"] == "some.module.hook"
    shown = repr(runtime_env)
    assert not [value for value in SECRETS.values() if value in shown]


def test_no_allow_listed_setting_is_a_secret() -> None:
    assert not [var.name for var in WORKER_SETTINGS if var.secret]
    assert env.MLFLOW_TRACKING_PASSWORD.secret and env.MLFLOW_FLASK_SERVER_SECRET_KEY.secret


@pytest.mark.integration
def test_a_local_ray_job_shows_no_secret_but_its_workers_can_still_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray shows a job's runtime environment to anyone with dashboard or job access; the
    workers of a local Ray still get the credentials, from the driver's environment."""
    ray = pytest.importorskip("ray")
    for name, value in {**SECRETS, **SETTINGS}.items():
        monkeypatch.setenv(name, value)

    @ray.remote
    def inspect() -> tuple[dict[str, object], str | None, str | None]:
        import os

        context = ray.get_runtime_context()
        return (
            dict(context.runtime_env),
            os.environ.get("MLFLOW_TRACKING_PASSWORD"),
            os.environ.get("MLFLOW_TRACKING_URI"),
        )

    with ray_session(address=None, num_cpus=1):
        runtime_env, password, uri = ray.get(inspect.remote())
    shown = repr(runtime_env)
    assert "admin-secret-123" not in shown and "tracking-secret-456" not in shown
    assert runtime_env["env_vars"] == SETTINGS
    assert password == "tracking-secret-456"  # inherited by the local workers
    assert uri == SETTINGS["MLFLOW_TRACKING_URI"]
