"""One MLflow run per training job: create or reopen it, log to it, close it.

Only the main process tracks (``enabled=False`` makes every call a no-op), so distributed
workers can share the same code path without creating runs of their own.

Metric points are buffered and sent as one ``log_batch`` call at most every
``SEND_INTERVAL_SEC`` from a background thread, so a slow tracking server never stalls a
training step and the sending thread rarely competes with the training loop for the GIL and
the cores. ``flush`` sends the rest and waits; it is called before every checkpoint, so
everything up to a checkpoint is durable in MLflow. (MLflow's own async logging batches
similarly, but its flush restarts a worker that polls once a second, which costs up to a
second per checkpoint.) A resumed run skips points it already holds, so no metric step is
ever logged twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from visionops import env
from visionops.config import TrackingConfig

logger = logging.getLogger(__name__)

SYSTEM_METRIC_PREFIX = "system/"
SEND_INTERVAL_SEC = 2.0
_MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch request


class RunTracker:
    def __init__(self, cfg: TrackingConfig, enabled: bool = True) -> None:
        self.cfg = cfg
        self.enabled = enabled
        self.run_id: str | None = None
        self._already_logged: dict[str, set[int]] = {}
        self._sender: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._buffer: list[Metric] = []
        self._last_send = time.monotonic()

    def start(
        self, params: Mapping[str, str], tags: Mapping[str, str], resume_run_id: str | None = None
    ) -> str | None:
        """Create the run (logging ``params``) or reopen ``resume_run_id``; returns the run id."""
        if not self.enabled:
            return None
        if self.cfg.tracking_uri:
            # MLflow keeps the tracking URI per process; every run of this process shares it.
            mlflow.set_tracking_uri(self.cfg.tracking_uri)
        if resume_run_id is not None:
            run = mlflow.start_run(run_id=resume_run_id, log_system_metrics=self.cfg.system_metrics)
            self._already_logged = _logged_steps(resume_run_id)
            mlflow.set_tags(dict(tags))
        else:
            run = mlflow.start_run(
                experiment_id=self._experiment_id(),
                run_name=self.cfg.run_name,
                tags=dict(tags),
                log_system_metrics=self.cfg.system_metrics,
            )
            mlflow.log_params(dict(params), synchronous=True)
        self.run_id = run.info.run_id
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="visionops-metrics")
        return self.run_id

    def _experiment_id(self) -> str | None:
        name = self.cfg.experiment
        if name is None:
            if env.mlflow_experiment_from_env():
                return None  # MLflow resolves MLFLOW_EXPERIMENT_NAME / _ID itself
            name = env.DEFAULT_EXPERIMENT
        client = MlflowClient()
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
            self._submit_buffer()

    def _submit_buffer(self) -> None:
        if self._sender is None:
            return
        for start in range(0, len(self._buffer), _MAX_METRICS_PER_BATCH):
            chunk = self._buffer[start : start + _MAX_METRICS_PER_BATCH]
            self._pending.append(self._sender.submit(self._send, chunk))
        self._buffer = []
        self._last_send = time.monotonic()

    def _send(self, points: list[Metric]) -> None:
        assert self.run_id is not None
        MlflowClient().log_batch(self.run_id, metrics=points, synchronous=True)

    def flush(self) -> None:
        """Send buffered points and wait until all are stored; re-raises a sending error."""
        self._submit_buffer()
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.enabled:
            mlflow.log_artifact(str(path), artifact_path)

    def log_figure(self, figure: Any, name: str) -> None:
        if self.enabled:
            mlflow.log_figure(figure, name)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        if self.enabled:
            mlflow.log_dict(dict(data), name)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.enabled:
            mlflow.set_tags(dict(tags))

    def end(self, status: str = "FINISHED") -> None:
        """Flush pending points and close the run with ``FINISHED``, ``FAILED`` or ``KILLED``."""
        if not self.enabled or self.run_id is None:
            return
        try:
            self.flush()
        finally:
            if self._sender is not None:
                self._sender.shutdown()
                self._sender = None
            if mlflow.active_run() is not None:
                mlflow.end_run(status=status)


def _logged_steps(run_id: str) -> dict[str, set[int]]:
    """The steps each training metric of a run already has (system metrics resume on their own)."""
    client = MlflowClient()
    keys = [
        k for k in client.get_run(run_id).data.metrics if not k.startswith(SYSTEM_METRIC_PREFIX)
    ]
    return {key: {m.step for m in client.get_metric_history(run_id, key)} for key in keys}
