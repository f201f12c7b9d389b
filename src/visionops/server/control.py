"""``visionops server start|stop|status`` as library calls: one stack per state folder.

A detached start leaves pid files in the state folder (``server.pid``, and ``s3.pid`` for the
local S3), each naming a process group, so that ``stop`` and ``status`` from another shell find
the processes; what listens on the server's port is found too when the pid file does not lead
to it. A foreground start stops both when it is interrupted.

    stack = start_stack(ServerSettings.from_env(), detach=True)
    print(stack.settings.url, stack.server.pid)
    stop_stack(ServerSettings.from_env())
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass

from visionops.server.process import (
    ServerProcess,
    answering_server,
    running_server,
    start_local_s3,
    start_server,
)
from visionops.server.settings import ServerConfigError, ServerSettings

_LOCAL_S3_HOST = "127.0.0.1"
_LOCAL_S3_BUCKET = "s3://mlflow-artifacts"
# moto accepts any keys, but the server's S3 client must send some.
_LOCAL_S3_KEY = "local-s3"


@dataclass
class Stack:
    """A started tracking server and, with ``--local-s3-port``, the local S3 it stores in."""

    settings: ServerSettings
    server: ServerProcess
    local_s3: ServerProcess | None
    artifacts: str  # where the server keeps artifacts

    def wait(self) -> int:
        """Run in the foreground until the server exits, Ctrl-C or SIGTERM; then stop it (and
        the local S3). Returns the exit status to report."""
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            assert self.server.popen is not None  # started here, in the foreground
            return self.server.popen.wait()
        except (KeyboardInterrupt, SystemExit):
            return 0
        finally:
            self.stop()

    def stop(self) -> None:
        self.server.stop()
        if self.local_s3 is not None:
            self.local_s3.stop()


def start_stack(
    settings: ServerSettings, *, detach: bool, local_s3_port: int | None = None
) -> Stack:
    """Create the databases and bucket if missing and start ``mlflow server``.

    With ``local_s3_port``, an in-memory S3 (moto) is started first on that loopback port and
    holds the artifacts (lost when it stops): a stand-in for S3 or MinIO to try the stack.
    """
    running = stack_status(settings)
    if running is not None:
        raise ServerConfigError(
            f"a server already runs at {settings.url} (process group {running.pid}); "
            "stop it with `visionops server stop`"
        )
    env: dict[str, str] = {}
    local_s3 = None
    if local_s3_port:
        local_s3 = start_local_s3(_LOCAL_S3_HOST, local_s3_port, settings.state_dir / "s3.log")
        # Written only now: start_local_s3 returned, so this moto runs and listens.
        (settings.state_dir / "s3.pid").write_text(str(local_s3.pid))
        env = {"MLFLOW_S3_ENDPOINT_URL": local_s3.url}
        env.update(AWS_ACCESS_KEY_ID=_LOCAL_S3_KEY, AWS_SECRET_ACCESS_KEY=_LOCAL_S3_KEY)
        if settings.artifacts_destination is None:
            settings = settings.model_copy(update={"artifacts_destination": _LOCAL_S3_BUCKET})
    try:
        server = start_server(settings, foreground=not detach, env=env)
    except BaseException:
        if local_s3 is not None:
            local_s3.stop()
            (settings.state_dir / "s3.pid").unlink(missing_ok=True)
        raise
    return Stack(settings, server, local_s3, settings.resolved_artifacts_destination(env))


def stop_stack(settings: ServerSettings) -> int | None:
    """Stop the server (and local S3) a detached start left running, or the MLflow server that
    answers on the settings' port; the process group stopped, or None when none was running."""
    local_s3 = running_server(settings, "s3")
    if local_s3 is not None:
        local_s3.stop()
    (settings.state_dir / "s3.pid").unlink(missing_ok=True)
    server = stack_status(settings)
    if server is None:
        return None
    server.stop()
    # A group that outlived its pid file's leader may not be the one listening: check again.
    leftover = answering_server(settings)
    if leftover is not None:
        leftover.stop()
    (settings.state_dir / "server.pid").unlink(missing_ok=True)
    return server.pid


def stack_status(settings: ServerSettings) -> ServerProcess | None:
    """The server group a start from this state folder left running (its leader may be gone,
    its uvicorn not), else the MLflow server listening on the settings' port."""
    return running_server(settings) or answering_server(settings)
