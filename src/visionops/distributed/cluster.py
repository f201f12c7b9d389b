"""What a job whose processes Ray starts needs: a Ray to run on and settings that travel.

Ray runs a Tune trial or a Train worker in a process of its own, in another working folder and
possibly on another machine, so a relative path means something else there and the shell's
environment is not inherited by default.

    with ray_session(address=None, num_cpus=None):   # a local Ray with all CPUs
        ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow

from visionops.config import TrainConfig

# Variables Ray's worker processes need to reach the same tracking server and artifact store.
FORWARDED_ENV_PREFIXES = ("MLFLOW_", "VISIONOPS_", "AWS_")


@contextmanager
def ray_session(
    address: str | None, num_cpus: int | None, setup_hook: str | None = None
) -> Iterator[None]:
    """Connect to ``address`` (or start a local Ray) unless this process already has one;
    shut down only what was started here.

    The ``MLFLOW_*``, ``VISIONOPS_*`` and ``AWS_*`` variables of this process are passed on to
    every process of the Ray job, and ``setup_hook`` (``module.function``), if given, runs in
    each of them before anything else.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    forwarded = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
    runtime_env: dict[str, Any] = {"env_vars": forwarded}
    if setup_hook is not None:
        runtime_env["worker_process_setup_hook"] = setup_hook
    ray.init(
        address=address,
        num_cpus=None if address else num_cpus,
        include_dashboard=False,
        runtime_env=runtime_env,
    )
    try:
        yield
    finally:
        ray.shutdown()


def absolute_tracking_uri(cfg: TrainConfig) -> str:
    """The tracking URI every process of the job must use, absolute so it means the same from
    any folder."""
    uri = cfg.tracking.tracking_uri or mlflow.get_tracking_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        # Ray's processes run in their own working folders: a relative SQLite path would give
        # each one a database of its own.
        uri = prefix + str(Path(uri.removeprefix(prefix)).resolve())
    return uri
