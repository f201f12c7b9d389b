"""What reaches Ray's worker processes: the allow-listed settings, never a secret; and a
local Ray: on loopback, and gone soon after a ``kill -9`` of its driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from visionops import env
from visionops.distributed.cluster import WORKER_SETTINGS, ray_session, worker_runtime_env

#: How long a local Ray's processes may outlive their killed driver (the reaper looks twice a
#: second; Ray's agents alone took over a minute).
_OUTLIVE_S = 5.0

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


# A driver of its own, so that the test can kill it: it starts a local Ray with ray_session,
# prints the pids of Ray's processes, and waits to be killed.
_DRIVER = """
import json, sys, time
import psutil, ray
from visionops.distributed.cluster import ray_session

with ray_session(address=None, num_cpus=1):
    ray.get(ray.remote(lambda: None).remote())  # a worker too
    processes = {}
    while not {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= set(processes.values()):
        time.sleep(0.2)
        processes = {p.pid: p.name() for p in psutil.Process().children(recursive=True)}
    print(json.dumps({"node_ip": ray.util.get_node_ip_address(), "processes": processes}))
    sys.stdout.flush()
    time.sleep(600)
"""


def _listening_beyond_loopback(pids: list[int]) -> dict[str, list[str]]:
    """The TCP/UDP sockets of ``pids`` that listen on an address other than loopback."""
    import ipaddress

    import psutil

    beyond: dict[str, list[str]] = {}
    for pid in pids:
        try:
            process = psutil.Process(pid)
            sockets = process.net_connections(kind="inet")
            name = process.name()
        except psutil.NoSuchProcess:
            continue
        for sock in sockets:
            # A TCP socket that listens, or a UDP socket bound but not connected.
            udp = sock.status == psutil.CONN_NONE and not sock.raddr
            if not (sock.status == psutil.CONN_LISTEN or udp) or not sock.laddr:
                continue
            address = ipaddress.ip_address(sock.laddr.ip)
            mapped = getattr(address, "ipv4_mapped", None)
            if not (mapped or address).is_loopback:
                beyond.setdefault(name, []).append(f"{sock.laddr.ip}:{sock.laddr.port}")
    return beyond


@pytest.mark.integration
def test_a_local_ray_stays_on_loopback_and_ends_with_its_killed_driver(tmp_path: Path) -> None:
    """The local Ray advertises 127.0.0.1 and listens on loopback only; after a kill -9 of
    its driver none of its processes (the agents included) outlives it by more than a few
    seconds."""
    import psutil

    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    environ[env.RAY_ENABLE_CLUSTER.name] = "0"  # as the visionops command sets it
    driver = subprocess.Popen(
        [sys.executable, "-c", _DRIVER],
        stdout=subprocess.PIPE,
        env=environ,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        assert driver.stdout is not None
        report = json.loads(driver.stdout.readline())
        processes = {int(pid): name for pid, name in report["processes"].items()}
        assert report["node_ip"] == "127.0.0.1"
        assert _listening_beyond_loopback(list(processes)) == {}
        ray_processes = [psutil.Process(pid) for pid in processes]
    finally:
        driver.kill()  # SIGKILL of the driver alone, as `kill -9 PID` does
        driver.wait()
    killed = time.monotonic()
    _, alive = psutil.wait_procs(ray_processes, timeout=_OUTLIVE_S)
    print(f"Ray's processes ended {time.monotonic() - killed:.1f} s after their driver")
    assert not [f"{p.pid} {p.name()}" for p in alive if p.status() != psutil.STATUS_ZOMBIE]
