"""What a job whose processes Ray starts needs: a Ray to run on and settings that travel.

Ray runs a Tune trial or a Train worker in a process of its own, in another working folder and
possibly on another machine, so a relative path means something else there.

Settings reach those processes in two ways, and secrets only by the first:

- **The processes' own environment.** A local Ray (no ``--address``) is started by this process,
  and its workers inherit this environment, credentials included (``MLFLOW_TRACKING_PASSWORD``,
  ``AWS_*`` keys). On a cluster, each node's environment is what ``ray start`` was run with:
  put the tracking credentials there (a systemd unit's ``EnvironmentFile``, or a Kubernetes
  Secret mounted as environment variables of the Ray pods).
- **Ray's runtime environment**, for the non-secret settings the job needs on every node
  (``WORKER_SETTINGS``). Ray shows a job's runtime environment in its job information and
  dashboard, so nothing else goes there: no password, token or key, and never the team
  server's admin password.

A local Ray registers its node as 127.0.0.1 and listens on loopback only when
``env.RAY_ENABLE_CLUSTER`` is 0 before Ray is first imported (the CLI sets it), and a reaper
(``visionops.distributed.reaper``) ends all of its processes if this one is killed.

    with ray_session(address=None, num_cpus=None):   # a local Ray with all CPUs
        ...
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from visionops import env
from visionops.config import TrainConfig
from visionops.tracking.client import resolve_tracking_uri

logger = logging.getLogger(__name__)

#: The node address of a local Ray (see ``env.RAY_ENABLE_CLUSTER``).
LOOPBACK = "127.0.0.1"

#: What Ray's worker processes are sent from this process's environment (when set): where to
#: track and store artifacts, and how to show progress. Credentials are not among them.
WORKER_SETTINGS: tuple[env.EnvVar[Any], ...] = (
    env.MLFLOW_TRACKING_URI,
    env.MLFLOW_EXPERIMENT_NAME,
    env.MLFLOW_EXPERIMENT_ID,
    env.MLFLOW_S3_ENDPOINT_URL,
    env.AWS_DEFAULT_REGION,
    env.PROGRESS,
)


def worker_runtime_env(
    setup_hook: str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The runtime environment of a Ray job: ``WORKER_SETTINGS`` that are set, and
    ``setup_hook`` (``module.function``), if given, to run in every worker first."""
    source = env.environ_or_process(environ)
    forwarded = {
        var.name: source[var.name]
        for var in WORKER_SETTINGS
        if var.is_set(source) and not var.secret  # a secret here would be on show in Ray
    }
    runtime_env: dict[str, Any] = {"env_vars": forwarded}
    if setup_hook is not None:
        runtime_env["worker_process_setup_hook"] = setup_hook
    return runtime_env


#: The driver's "ray" loggers: Ray's INFO lines ("Started a local Ray instance", Tune's "Wrote
#: the latest version of all result files") are Ray's bookkeeping, not the command's output.
RAY_LOG_LEVEL = logging.WARNING


@contextmanager
def ray_session(
    address: str | None, num_cpus: int | None, setup_hook: str | None = None
) -> Iterator[None]:
    """Connect to ``address`` (or start a local Ray) unless this process already has one;
    shut down only what was started here. See the module docstring for what reaches the
    workers, and ``_local_ray`` for a local Ray's."""
    import ray

    if ray.is_initialized():
        yield
        return
    if address is None:
        with _local_ray(num_cpus, worker_runtime_env(setup_hook)):
            yield
        return
    ray.init(
        address=address,
        include_dashboard=False,
        runtime_env=worker_runtime_env(setup_hook),
        logging_level=RAY_LOG_LEVEL,
    )
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def _local_ray(num_cpus: int | None, runtime_env: dict[str, Any]) -> Iterator[None]:
    """``ray.init()`` of a local Ray, on loopback where this process allows it, with a reaper
    (``visionops.distributed.reaper``) that ends all of its processes should this one die."""
    import psutil
    import ray

    this = psutil.Process()
    before = {child.pid for child in this.children()}
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        runtime_env=runtime_env,
        logging_level=RAY_LOG_LEVEL,
    )
    # ray.init started these (GCS, raylet, monitors); the raylet then starts agents and workers.
    started = [str(child.pid) for child in this.children() if child.pid not in before]
    reaper = subprocess.Popen(
        [sys.executable, "-m", "visionops.distributed.reaper", str(this.pid), *started],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # out of reach of a signal to this process's group
    )
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:
        logger.warning(
            "the local Ray took %s for its node address, not %s, and listens beyond this "
            "machine: set %s=0 before Ray is first imported (the visionops command does)",
            node_ip,
            LOOPBACK,
            env.RAY_ENABLE_CLUSTER.name,
        )
    try:
        yield
    finally:
        try:
            ray.shutdown()
        finally:
            assert reaper.stdin is not None
            reaper.stdin.close()  # the reaper then ends whatever ray.shutdown() left running
            reaper.wait()


def absolute_tracking_uri(cfg: TrainConfig) -> str:
    """The tracking URI every process of the job must use, absolute so it means the same from
    any folder."""
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri)
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        # Ray's processes run in their own working folders: a relative SQLite path would give
        # each one a database of its own.
        uri = prefix + str(Path(uri.removeprefix(prefix)).resolve())
    return uri
