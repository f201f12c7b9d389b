"""Run the app on uvicorn: one process, or ``workers`` processes sharing the port.

uvicorn stops on SIGTERM or Ctrl-C the graceful way: it stops accepting connections, lets the
requests in flight finish, then runs the app's shutdown (the batchers answer what they hold).
A SIGTERM then ends the process with exit code 0 (what an orchestrator expects of a clean
stop).
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
from types import FrameType

from fastapi import FastAPI

from visionops import env
from visionops.serving.app import create_app
from visionops.serving.settings import ServeConfig

logger = logging.getLogger(__name__)

#: Longest uvicorn waits for requests in flight once told to stop.
GRACEFUL_SHUTDOWN_S = 30


def serve(config: ServeConfig) -> None:
    """Serve until stopped; ``config.port`` 0 binds a free port (logged)."""
    import uvicorn

    options = {
        "host": config.host,
        "port": config.port,
        "log_level": "info",
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_S,
        # Health checks and probes are in the metrics; the access log would be one line each.
        "access_log": False,
    }
    # uvicorn hands a signal back to the process's previous handler once it has shut down;
    # for SIGTERM that handler is this no-op, so a graceful stop returns and exits 0.
    signal.signal(signal.SIGTERM, _stopped)
    if config.workers == 1:
        _set_threads(config)
        uvicorn.run(create_app(config), **options)  # type: ignore[arg-type]
        return
    # Worker processes import the app by name, so the settings travel in the environment (they
    # hold no secret: tracking credentials are MLflow's own variables, inherited as they are).
    with tempfile.TemporaryDirectory(prefix="visionops-metrics-") as metrics_dir:
        os.environ[env.SERVE_CONFIG.name] = config.model_dump_json()
        os.environ[env.PROMETHEUS_MULTIPROC_DIR.name] = metrics_dir
        uvicorn.run(
            "visionops.serving.server:app_from_environment",
            factory=True,
            workers=config.workers,
            **options,  # type: ignore[arg-type]
        )


def _stopped(signum: int, frame: FrameType | None) -> None:
    logger.info("stopped by signal %d", signum)


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``serve``."""
    text = env.SERVE_CONFIG.get()
    if not text:
        raise RuntimeError(f"{env.SERVE_CONFIG.name} is not set: start workers with serve()")
    config = ServeConfig.model_validate_json(text)
    _set_threads(config)
    return create_app(config)


def _set_threads(config: ServeConfig) -> None:
    """torch's thread count is per process: each worker sets its own."""
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
