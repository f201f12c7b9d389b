"""One MLflow run per training job: create or reopen it, log to it, close it.

Only the main process tracks (``enabled=False`` makes every call a no-op), so distributed
workers can share the same code path without creating runs of their own.

Metric points are buffered and, at most every ``SEND_INTERVAL_SEC``, written as one batch to
the run's write-ahead spool (``<run dir>/tracking-spool/``, see ``spool.py``), then sent with
``log_batch`` from a background thread, which deletes the file once MLflow has it. A slow
tracking server never stalls a training step, and the sending thread rarely competes with the
training loop for the GIL and the cores. (MLflow's own async logging batches similarly, but its
flush restarts a worker that polls once a second, which costs up to a second per checkpoint.)

If the server goes away, training does not notice: batches stay spooled, one warning says so,
and the thread sends them, oldest first, once ``/health`` answers again (it checks every few
seconds), at the end of the run, or when someone runs ``visionops tracking replay``. ``flush``,
called before every checkpoint, spools the buffer and then waits at most
``FLUSH_TIMEOUT_SEC`` for the thread: the spool file, not the server, is what makes the points
durable, so the wait only keeps the usual case (server up) "in MLflow by the checkpoint"
without letting a dead server, or MLflow's minutes of retries inside ``log_batch``, stall
training. Sending a batch twice is harmless (see ``spool.py``), which is what makes the replay
exactly-once in effect. A resumed run skips points it already holds, in MLflow or in the
spool its crashed predecessor left, so no metric step is ever logged twice.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from visionops import env, names
from visionops.config import TrackingConfig, redact_url
from visionops.errors import ConfigError
from visionops.tracking.client import tracking_client
from visionops.tracking.sender import SpoolSender, refusal_error, server_answers
from visionops.tracking.spool import MetricSpool, replay_command, spool_folder

if TYPE_CHECKING:
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

logger = logging.getLogger(__name__)

SEND_INTERVAL_SEC = 2.0
FLUSH_TIMEOUT_SEC = 15.0
_MAX_METRICS_PER_BATCH = 1000  # MLflow's limits for one log_batch request
_MAX_PARAMS_PER_BATCH = 100

# MLflow's local stores draw a missing run name from Python's global ``random``, which train()
# has just seeded with cfg.seed, so every run of one seed got the same name. Names are drawn
# from the OS instead: no seeding reaches them, and a forked process draws its own.
_RUN_NAMES = random.SystemRandom()


def generated_run_name() -> str:
    """A new run name in MLflow's style (``overjoyed-slug-911``), whatever was seeded."""
    from mlflow.utils.name_utils import _GENERATOR_NOUNS, _GENERATOR_PREDICATES

    predicate = _RUN_NAMES.choice(_GENERATOR_PREDICATES).lower()
    noun = _RUN_NAMES.choice(_GENERATOR_NOUNS).lower()
    return f"{predicate}-{noun}-{_RUN_NAMES.randint(0, 999)}"


class RunTracker:
    def __init__(self, cfg: TrackingConfig, enabled: bool = True) -> None:
        self.cfg = cfg
        self.enabled = enabled
        self.run_id: str | None = None
        self.tracking_uri: str | None = None
        self.client: MlflowClient | None = None
        self._system_metrics: SystemMetricsMonitor | None = None
        self._already_logged: dict[str, set[int]] = {}
        self._spool = MetricSpool()  # in memory until spool_in() names the run folder
        self._sender: SpoolSender | None = None
        self._buffer: list[Metric] = []
        self._last_send = time.monotonic()

    def start(
        self, params: Mapping[str, str], tags: Mapping[str, str], resume_run_id: str | None = None
    ) -> str | None:
        """Create the run (logging ``params``) or reopen ``resume_run_id``; returns the run id."""
        if not self.enabled:
            return None
        client = self.client = tracking_client(self.cfg.tracking_uri)
        self.tracking_uri = client.tracking_uri
        if self.cfg.parent_run_id:
            tags = {**tags, names.PARENT_RUN_TAG: self.cfg.parent_run_id}
        if resume_run_id is not None:
            self.run_id = resume_run_id
            client.update_run(resume_run_id, status="RUNNING")
            self._already_logged = _logged_steps(client, resume_run_id)
            self.set_tags(tags)
        else:
            from mlflow.tracking.context.registry import resolve_tags

            # resolve_tags adds what MLflow's fluent start_run records (user, source, git).
            run = client.create_run(
                self._experiment_id(client),
                run_name=self.cfg.run_name or generated_run_name(),
                tags=resolve_tags(dict(tags)),
            )
            self.run_id = run.info.run_id
            items = [Param(key, value) for key, value in params.items()]
            for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
                chunk = items[start : start + _MAX_PARAMS_PER_BATCH]
                client.log_batch(self.run_id, params=chunk, synchronous=True)
        if self.cfg.system_metrics:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._system_metrics = SystemMetricsMonitor(
                self.run_id,
                resume_logging=resume_run_id is not None,
                tracking_uri=self.tracking_uri,
            )
            self._system_metrics.start()
        self._sender = SpoolSender(self._spool, self.tracking_uri)
        return self.run_id

    def spool_in(self, run_dir: Path) -> None:
        """Keep unsent metric points in ``run_dir/tracking-spool`` (call right after ``start``).

        Points an earlier process of this run left there are sent first, and their steps count
        as logged, like the points MLflow already holds.
        """
        if self._sender is None or self.run_id is None:
            return
        if self._buffer or self._spool.num_points():
            raise RuntimeError("spool_in() must come before the first log_metrics()")
        spool = MetricSpool(spool_folder(run_dir))
        spool.discard_partial_writes()
        spool.clear_end()  # this process ends the run now
        leftover = spool.steps_by_key(self.run_id)
        for key, steps in leftover.items():
            self._already_logged.setdefault(key, set()).update(steps)
        self._spool = self._sender.spool = spool
        if leftover:
            logger.info("sending metric points left in %s by an earlier process", spool.folder)
            self._sender.replay()

    def _experiment_id(self, client: MlflowClient) -> str:
        """The configured experiment, else the parent run's, else MLflow's variables', else
        ``visionops``; created when it does not exist yet."""
        if self.cfg.parent_run_id and not self.cfg.experiment:
            # A nested run shows under its parent only in the parent's experiment; MLflow
            # Projects hand the child both the project run and that experiment's id, but a
            # MLFLOW_EXPERIMENT_NAME from ./.env would otherwise win over the id.
            return _parent_experiment_id(client, self.cfg.parent_run_id)
        # MLflow's own order: the name, then the id, of its variables.
        name = self.cfg.experiment or env.MLFLOW_EXPERIMENT_NAME.get()
        experiment_id = None if name else env.MLFLOW_EXPERIMENT_ID.get()
        if experiment_id:
            return experiment_id
        name = name or env.DEFAULT_EXPERIMENT
        experiment = client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment else client.create_experiment(name)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue one point per metric at ``step``; returns without waiting for the server."""
        if not self.enabled or self._sender is None:
            return
        now = int(time.time() * 1000)
        points = [
            Metric(key, float(value), now, step)
            for key, value in metrics.items()
            if step not in self._already_logged.get(key, ())
        ]
        self._buffer.extend(points)
        if time.monotonic() - self._last_send >= SEND_INTERVAL_SEC:
            self._spool_buffer()
            self._sender.request()

    def _spool_buffer(self) -> None:
        assert self.run_id is not None and self.tracking_uri is not None
        for start in range(0, len(self._buffer), _MAX_METRICS_PER_BATCH):
            chunk = self._buffer[start : start + _MAX_METRICS_PER_BATCH]
            self._spool.append(self.run_id, self.tracking_uri, chunk)
        self._buffer = []
        self._last_send = time.monotonic()

    def flush(self) -> None:
        """Make every point logged so far durable: in MLflow, or in the spool while the server
        is unreachable or slow. Raises TrackingRefused if the server refused points (HTTP 4xx).
        """
        if self._sender is None:
            return
        self._spool_buffer()
        self._sender.deliver_now(FLUSH_TIMEOUT_SEC)
        self._raise_refusal()

    def _raise_refusal(self) -> None:
        if self._sender is not None and self._sender.refusal is not None:
            error, self._sender.refusal = self._sender.refusal, None
            raise refusal_error(error, self._spool) from error

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.log_figure(self.run_id, figure, name)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.log_dict(self.run_id, dict(data), name)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.client is not None and self.run_id is not None:
            run_tags = [RunTag(key, str(value)) for key, value in tags.items()]
            self.client.log_batch(self.run_id, tags=run_tags, synchronous=True)

    def end(self, status: str = "FINISHED") -> None:
        """Send what is left and close the run with ``FINISHED``, ``FAILED`` or ``KILLED``.

        With the server unreachable the points stay spooled, the status is written next to them
        and a warning names the command that sends both later. Raises TrackingRefused if the
        server refused points (HTTP 4xx); the run is closed first.
        """
        sender, self._sender = self._sender, None
        if sender is None or self.run_id is None or self.tracking_uri is None:
            return
        self._spool_buffer()  # durable before anything below can fail
        if self._system_metrics is not None:
            self._system_metrics.finish()
            self._system_metrics = None
        sender.close(FLUSH_TIMEOUT_SEC)
        remaining = self._spool.num_points()
        reachable = server_answers(self.tracking_uri)
        if reachable and self.client is not None:
            self.client.set_terminated(self.run_id, status)
        else:
            # MlflowClient would retry for minutes; `visionops tracking replay` sets it later.
            self._spool.mark_end(self.run_id, self.tracking_uri, status)
        if sender.refusal is not None:
            raise refusal_error(sender.refusal, self._spool) from sender.refusal
        if remaining or not reachable:
            self._warn_unsent(remaining, None if reachable else status)

    def _warn_unsent(self, remaining: int, status: str | None) -> None:
        """One warning: what did not reach the server, where it is, the command that sends it."""
        what = f"{remaining} metric points" + (f" and the run's end ({status})" if status else "")
        server = redact_url(self.tracking_uri or "")
        if self._spool.folder is None:
            logger.warning("%s did not reach %s and are lost", what, server)
            return
        logger.warning(
            "%s did not reach %s; they stay in %s. Send them with: %s",
            what,
            server,
            self._spool.folder,
            replay_command(self._spool.folder),
        )


def _parent_experiment_id(client: MlflowClient, parent_run_id: str) -> str:
    try:
        return str(client.get_run(parent_run_id).info.experiment_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ConfigError(
            f"parent_run_id: no run {parent_run_id!r} at {redact_url(client.tracking_uri)} "
            "to nest the run under; give the id of an existing run"
        ) from exc


def _logged_steps(client: MlflowClient, run_id: str) -> dict[str, set[int]]:
    """The steps each training metric of a run already has (system metrics resume on their own)."""
    keys = [
        key
        for key in client.get_run(run_id).data.metrics
        if not key.startswith(names.SYSTEM_METRIC_PREFIX)
    ]
    return {key: {m.step for m in client.get_metric_history(run_id, key)} for key in keys}
