"""Start and stop the ``mlflow server`` process (and a loopback S3 endpoint for trying S3).

The server runs in its own session, so its pid is also its process group's id: that group,
not the one pid, is what runs and what stops. ``mlflow server`` execs uvicorn as a child; a
kill -9 of the leader leaves uvicorn answering in the same group, and signalling the group
stops it too. ``start_server`` returns once ``/health`` answers; the process's output goes to
``STATE_DIR/server.log``, its pid to ``STATE_DIR/server.pid`` and what it serves (URL,
artifact store, S3 endpoint) to ``STATE_DIR/server.json``, which the backup script reads.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import requests

from visionops.server.settings import ServerConfigError, ServerSettings

STARTUP_TIMEOUT_SEC = 120.0


@dataclass
class ServerProcess:
    """A started process group: its leader's pid (also the group's id), URL and log file."""

    pid: int
    url: str
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        """Whether any process of the group lives, the leader or a child it left behind."""
        if self.popen is not None:
            self.popen.poll()  # reaps the leader if it exited, so it no longer counts
        else:
            # A child of this process that exited stays a zombie until it is reaped; other
            # processes are not ours to wait for.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
        return bool(group_members(self.pid))

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the whole group, SIGKILL after ``timeout`` seconds."""
        _signal_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.running():
            _signal_group(self.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.1)
        if self.popen is not None:
            self.popen.wait(timeout=10)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    import psutil

    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (OSError, psutil.Error):  # exited while we looked
            continue
    return members


def _signal_group(pgid: int, signum: int) -> None:
    if pgid == os.getpgrp():  # never this command's own group (a server started by hand)
        return
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pgid, signum)


def port_in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be bound (as a server binds it, with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def listeners(port: int) -> list[int]:
    """The pids that listen on TCP ``port`` (those this user may see)."""
    import psutil

    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return []
    return sorted(
        {
            c.pid
            for c in connections
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
        }
    )


def describe_process(pid: int) -> str:
    """``pid 123 (python -m moto.server ...)``, for messages."""
    import psutil

    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return f"pid {pid}"
    command = command if len(command) <= 80 else command[:77] + "..."
    return f"pid {pid} ({command})"


def write_auth_config(settings: ServerSettings) -> Path:
    """MLflow's basic-auth config (``MLFLOW_AUTH_CONFIG_PATH``): users and permissions in their
    own PostgreSQL database. Readable by the owner only: it holds the admin password.

    MLflow verifies the password of every request with a deliberately slow hash (tens of ms
    of CPU), and a training run logs its metrics in a stream of requests. Its login cache
    (``auth_cache_ttl_seconds``, off by default) verifies each login once per
    ``auth_cache_s``; a password changed through the API is forgotten at once by the process
    that changed it, by the others when their entry expires."""
    values = {
        "default_permission": settings.default_permission,
        "database_uri": settings.database_uri(settings.auth_db),
        "admin_username": settings.admin_username,
        "admin_password": settings.checked_admin_password(),
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "auth_cache_ttl_seconds": str(settings.auth_cache_s),
    }
    config = configparser.ConfigParser()
    # MLflow reads the file with interpolation on, where a literal % is written %%.
    config["mlflow"] = {key: value.replace("%", "%%") for key, value in values.items()}
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    path = settings.state_dir / "basic_auth.ini"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        config.write(handle)
    return path


def server_command(settings: ServerSettings, environ: Mapping[str, str] | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        settings.database_uri(settings.tracking_db),
        "--artifacts-destination",
        settings.resolved_artifacts_destination(environ),
        "--app-name",
        "basic-auth",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
    ]


def server_environment(
    settings: ServerSettings, overlay: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {**os.environ, **(overlay or {})}
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(write_auth_config(settings).resolve())
    env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = settings.secret_key()
    # MLflow's job runner (a dozen huey consumers) serves features visionops does not use.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def start_server(
    settings: ServerSettings, foreground: bool = False, env: Mapping[str, str] | None = None
) -> ServerProcess:
    """Start ``mlflow server`` for ``settings`` and wait until it answers ``/health``.

    With ``foreground`` the server's output goes to this terminal instead of the log file;
    ``env`` adds to this process's environment for the server (S3 endpoint and keys).
    Raises ServerConfigError when the settings are unusable, the port is taken or the server
    exits during start-up (the message includes the end of its log).
    """
    from visionops.server.databases import ensure_databases

    env = server_environment(settings, env)  # checks the admin password first
    if _answers(settings.url):
        holders = ", ".join(describe_process(pid) for pid in listeners(settings.port))
        holders = holders or "a process of another user"
        raise ServerConfigError(
            f"something already answers at {settings.url} ({holders})"
            "; stop it (`visionops server stop` stops an MLflow server there) or choose another "
            "VISIONOPS_SERVER_PORT"
        )
    ensure_databases(settings)
    destination = settings.resolved_artifacts_destination(env)
    if destination.startswith("s3://"):
        ensure_bucket(destination, env)
    else:
        Path(destination).mkdir(parents=True, exist_ok=True)
    log_path = settings.state_dir / "server.log"
    output = None if foreground else log_path.open("ab")
    popen = subprocess.Popen(
        server_command(settings, env),
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
        start_new_session=True,
    )
    if output:
        output.close()
    server = ServerProcess(popen.pid, settings.url, log_path, popen)
    write_state(settings, popen.pid, destination, env)
    try:
        wait_until_ready(server)
    except ServerConfigError:
        server.stop()
        raise
    return server


def write_state(
    settings: ServerSettings, pid: int, destination: str, env: Mapping[str, str]
) -> None:
    """Record the started group and what it serves, for ``stop``/``status`` from another shell
    and for the backup script, which must name the artifact store this server really uses."""
    (settings.state_dir / "server.pid").write_text(str(pid))
    record = {
        "pid": pid,
        "url": settings.url,
        "artifacts_destination": destination,
        "s3_endpoint": env.get("MLFLOW_S3_ENDPOINT_URL")
        if destination.startswith("s3://")
        else None,
    }
    (settings.state_dir / "server.json").write_text(json.dumps(record, indent=2) + "\n")


def wait_until_ready(server: ServerProcess, timeout: float = STARTUP_TIMEOUT_SEC) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.running():
            raise ServerConfigError(
                f"the tracking server exited during start-up:\n{_log_tail(server.log_path)}"
            )
        if _answers(server.url):
            return
        time.sleep(0.3)
    raise ServerConfigError(f"the tracking server did not answer within {timeout:.0f} s")


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).ok
    except requests.RequestException:
        return False


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def running_server(settings: ServerSettings, name: str = "server") -> ServerProcess | None:
    """The process group ``name`` (``server``, or ``s3`` for the local S3) started for this
    state folder, if any process of it still runs."""
    pid_file = settings.state_dir / f"{name}.pid"
    if not pid_file.is_file():
        return None
    log_path = settings.state_dir / f"{name}.log"
    process = ServerProcess(int(pid_file.read_text()), settings.url, log_path)
    return process if process.running() else None


def answering_server(settings: ServerSettings) -> ServerProcess | None:
    """The ``mlflow server`` that listens on the settings' port, whoever started it: the state
    folder's pid file may be gone, or name a group the server no longer belongs to."""
    import psutil

    for pid in listeners(settings.port):
        try:
            command = " ".join(psutil.Process(pid).cmdline())
            group = os.getpgid(pid)
        except (OSError, psutil.Error):
            continue
        # Only an MLflow server: the port is the state's, but what listens there may not be.
        if "mlflow" in command or "uvicorn" in command:
            return ServerProcess(group, settings.url, settings.state_dir / "server.log")
    return None


def ensure_bucket(destination: str, environ: Mapping[str, str] | None = None) -> None:
    """Create the bucket of an ``s3://bucket/prefix`` destination if it does not exist."""
    import boto3
    from botocore.exceptions import ClientError

    environ = os.environ if environ is None else environ
    bucket = destination.removeprefix("s3://").split("/", 1)[0]
    s3 = boto3.client(
        "s3",
        endpoint_url=environ.get("MLFLOW_S3_ENDPOINT_URL"),
        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY"),
        region_name=environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)


def start_local_s3(host: str, port: int, log_path: Path) -> ServerProcess:
    """moto's S3 API on a loopback port: an in-memory stand-in for S3 or MinIO where neither
    runs. Everything it holds is lost when it stops.

    Refuses a port that is taken: a leftover moto would answer for the new one (which then
    fails to bind, seen only in its log), and its contents are not this start's.
    """
    if port_in_use(host, port):
        holders = ", ".join(describe_process(pid) for pid in listeners(port))
        raise ServerConfigError(
            f"cannot start the local S3 on {host}:{port}: the port is in use by "
            f"{holders or 'another process'}; stop it or choose another --local-s3-port"
        )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as output:
        popen = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(popen.pid, f"http://{host}:{port}", log_path, popen)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not server.running():
            raise ServerConfigError(f"moto exited during start-up:\n{_log_tail(log_path)}")
        # Ready when this moto listens, not when something on the port answers.
        if set(listeners(port)) & set(group_members(popen.pid)):
            return server
        time.sleep(0.2)
    server.stop()
    raise ServerConfigError("moto did not answer within 30 s")
