"""A training run's progress in a Prometheus Pushgateway, for alerts and dashboards.

``visionops train --pushgateway http://localhost:9091`` (or ``VISIONOPS_PUSHGATEWAY``) makes
rank 0 push the run's gauges under job ``visionops_training``, grouped by ``run_id`` (the MLflow
run id), each labelled with its ``experiment`` and ``sweep`` (a Ray Tune trial's sweep run id,
else ""). A push replaces the group (PUT): the group always holds one run's latest state.

    pusher = ProgressPusher.for_run(tracker)  # a no-op without a URL or on other ranks
    pusher.start(epoch=0, step=0)
    pusher.log_step(step, step_metrics)       # pushes at most every PUSH_INTERVAL_SEC
    pusher.log_epoch(epoch, step, metrics)    # pushes now
    pusher.finish("FINISHED")                 # the outcome; running = 0

Pushes run on a background thread with a short timeout, so a slow or dead Pushgateway costs
training nothing but one warning. At the end the group is *finalised*, not deleted as
Prometheus advises for batch jobs: the success or failure timestamp is what the alerts
TrainingFailed and TrainingStalled read. Delete old groups with ``curl -X DELETE
<url>/metrics/job/visionops_training/run_id/<run id>`` (see docs/tracking.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.client import HTTPException
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from mlflow.exceptions import MlflowException
from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, pushadd_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler

from visionops import names
from visionops.config import REDACTED, redact_url

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from visionops.tracking.run import RunTracker

logger = logging.getLogger(__name__)

JOB = "visionops_training"
GROUPING_KEY = "run_id"  # the MLflow run id
LABELS = ("experiment", "sweep")

EPOCH = "visionops_training_epoch"
STEP = "visionops_training_step"
IMAGES_PER_SECOND = "visionops_training_images_per_second"
LOSS = "visionops_training_loss"
VAL_ACCURACY = "visionops_training_val_accuracy"
LAST_PROGRESS_TIMESTAMP = "visionops_training_last_progress_timestamp_seconds"
LAST_SUCCESS_TIMESTAMP = "visionops_training_last_success_timestamp_seconds"
LAST_FAILURE_TIMESTAMP = "visionops_training_last_failure_timestamp_seconds"
RUNNING = "visionops_training_running"

_DOCUMENTATION = {
    EPOCH: "Epochs completed.",
    STEP: "Optimizer steps completed.",
    IMAGES_PER_SECOND: "Training throughput over the last logging window, all ranks.",
    LOSS: "Training loss of the last logged optimizer step.",
    VAL_ACCURACY: "Validation accuracy after the last epoch.",
    LAST_PROGRESS_TIMESTAMP: "Unix time of the last push while the run was running.",
    LAST_SUCCESS_TIMESTAMP: "Unix time the run finished successfully (0: it has not).",
    LAST_FAILURE_TIMESTAMP: "Unix time the run failed (0: it has not).",
    RUNNING: "1 while the run trains, 0 once it has ended.",
}
#: Every metric name a training run pushes (the Pushgateway adds push_time_seconds and
#: push_failure_time_seconds per group).
METRIC_NAMES = tuple(_DOCUMENTATION)

PUSH_INTERVAL_SEC = 10.0  # between step pushes; epoch ends and the end push at once
PUSH_TIMEOUT_SEC = 5.0  # per request, and what the end of a run waits at most

_Handler = Callable[..., Callable[[], None]]
#: What a push raises when the gateway is away, slow, or answers an error (urllib's URLError,
#: HTTPError and timeouts are OSErrors).
_PUSH_ERRORS = (OSError, ValueError, HTTPException)


class ProgressPusher:
    """Pushes one run's progress gauges from a background thread; without a URL, a no-op."""

    def __init__(
        self,
        url: str | None,
        run_id: str | None,
        experiment: str = "",
        sweep: str = "",
        interval_sec: float = PUSH_INTERVAL_SEC,
        timeout_sec: float = PUSH_TIMEOUT_SEC,
    ) -> None:
        self.enabled = url is not None and run_id is not None
        self._shown_url = redact_url(url) if url else ""
        handler: _Handler = default_handler
        self._gateway, self._handler = _without_credentials(url) if url else ("", handler)
        self._grouping_key = {GROUPING_KEY: run_id or ""}
        self._interval, self._timeout = interval_sec, timeout_sec
        # A registry per run: nothing global, so runs in one process (Tune trials) stay apart.
        # A gauge appears once set: val_accuracy before the first epoch is absent, not 0.
        self.registry = CollectorRegistry()
        self._labels = {"experiment": experiment, "sweep": sweep}
        self._gauges = {
            name: Gauge(name, doc, LABELS, registry=self.registry)
            for name, doc in _DOCUMENTATION.items()
        }
        self._wake = threading.Event()
        self._lock = threading.Lock()  # the end's gauges change together, between two pushes
        self._running = False
        self._closing = False
        self._warned = False
        self._last_request = 0.0
        self._thread = threading.Thread(target=self._send_loop, name="pushgateway", daemon=True)

    @classmethod
    def for_run(cls, tracker: RunTracker) -> ProgressPusher:
        """The pusher of the tracker's run, configured by its ``pushgateway`` (enabled only where
        the tracker is: rank 0)."""
        url, run_id = tracker.cfg.pushgateway, tracker.run_id
        if url is None or run_id is None or not tracker.enabled or tracker.client is None:
            return cls(None, None)
        if urlsplit(url).password == REDACTED:  # a bare --resume reads the saved config
            logger.warning(
                "not pushing progress to %s: the saved configuration hides its password; "
                "pass --pushgateway (or VISIONOPS_PUSHGATEWAY) again",
                url,
            )
            return cls(None, None)
        experiment, sweep = run_labels(tracker.client, run_id)
        return cls(url, run_id, experiment, sweep)

    def start(self, epoch: int, step: int) -> None:
        """The run (re)starts at ``epoch`` and ``step``; the first push replaces what a
        previous attempt of the same run left in its group."""
        if not self.enabled:
            return
        for name, value in {
            EPOCH: epoch,
            STEP: step,
            RUNNING: 1,
            LAST_PROGRESS_TIMESTAMP: time.time(),
            LAST_SUCCESS_TIMESTAMP: 0,
            LAST_FAILURE_TIMESTAMP: 0,
        }.items():
            self._set(name, value)
        self._running = True
        self._thread.start()
        self._request()

    def log_step(self, step: int, metrics: Mapping[str, float]) -> None:
        """An optimizer step's logged metrics; pushed if the last push is old enough."""
        if not self.enabled:
            return
        self._set(STEP, step)
        if names.STEP_LOSS in metrics:
            self._set(LOSS, metrics[names.STEP_LOSS])
        if names.IMAGES_PER_SEC in metrics:
            self._set(IMAGES_PER_SECOND, metrics[names.IMAGES_PER_SEC])
        if time.monotonic() - self._last_request >= self._interval:
            self._request()

    def log_epoch(self, epoch: int, step: int, metrics: Mapping[str, float]) -> None:
        """An epoch's end: pushed now."""
        if not self.enabled:
            return
        self._set(EPOCH, epoch)
        self._set(STEP, step)
        if names.VAL_ACCURACY in metrics:
            self._set(VAL_ACCURACY, metrics[names.VAL_ACCURACY])
        self._request()

    def finish(self, status: str) -> None:
        """Push the outcome: ``FINISHED`` sets the success timestamp, ``FAILED`` the failure
        one, ``KILLED`` (stopped to be resumed) neither; ``running`` becomes 0. Waits at most
        about the push timeout."""
        if not self._running:
            return
        outcome = {"FINISHED": LAST_SUCCESS_TIMESTAMP, "FAILED": LAST_FAILURE_TIMESTAMP}
        with self._lock:
            if status in outcome:
                self._set(outcome[status], time.time())
            self._set(RUNNING, 0)
            self._running = False
            self._closing = True
        self._wake.set()
        self._thread.join(self._timeout + 1.0)
        if self._thread.is_alive():
            self._warn(f"the last push took longer than {self._timeout:g} s")

    def _set(self, name: str, value: float) -> None:
        self._gauges[name].labels(**self._labels).set(value)

    def _request(self) -> None:
        self._last_request = time.monotonic()
        self._wake.set()

    def _send_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                closing = self._closing  # a finish() during this push wakes it once more
                if self._running:
                    self._set(LAST_PROGRESS_TIMESTAMP, time.time())
            try:
                push_to_gateway(
                    self._gateway,
                    job=JOB,
                    registry=self.registry,
                    grouping_key=self._grouping_key,
                    timeout=self._timeout,
                    handler=self._handler,
                )
            except _PUSH_ERRORS as error:
                self._warn(str(error))
            if closing:
                return

    def _warn(self, reason: str) -> None:
        if self._warned:
            return  # one warning per run, not one per push
        self._warned = True
        logger.warning(
            "cannot push training progress to the Pushgateway at %s (%s); training goes on "
            "without it",
            self._shown_url,
            reason,
        )


def run_labels(client: MlflowClient, run_id: str) -> tuple[str, str]:
    """The ``experiment`` and ``sweep`` labels of a run: its experiment's name, and the run it
    is nested under if that is a sweep's (tag ``names.SWEEP_TAG``), else ""."""
    try:
        run = client.get_run(run_id)
        experiment = client.get_experiment(run.info.experiment_id).name
        parent = run.data.tags.get(names.PARENT_RUN_TAG) or ""
        if parent and names.SWEEP_TAG not in client.get_run(parent).data.tags:
            parent = ""
    except MlflowException as error:  # labels are not worth failing a run for
        logger.warning("cannot read the experiment and sweep of run %s: %s", run_id, error)
        return "", ""
    return experiment, parent


def mark_ended(url: str, run_id: str, experiment: str, sweep: str) -> None:
    """Set ``running`` to 0 in the group of a run that ended without saying so: a trial a
    scheduler stopped (Tune abandons its thread, so its own last push never comes). The
    group's other gauges stay as last pushed; a failure is logged, not raised."""
    registry = CollectorRegistry()
    running = Gauge(RUNNING, _DOCUMENTATION[RUNNING], LABELS, registry=registry)
    running.labels(experiment=experiment, sweep=sweep).set(0)
    gateway, handler = _without_credentials(url)
    try:
        # POST replaces only the metrics it names; PUT would drop the rest of the group.
        pushadd_to_gateway(
            gateway,
            job=JOB,
            registry=registry,
            grouping_key={GROUPING_KEY: run_id},
            timeout=PUSH_TIMEOUT_SEC,
            handler=handler,
        )
    except _PUSH_ERRORS as error:
        logger.warning(
            "cannot mark run %s ended in the Pushgateway at %s: %s", run_id, redact_url(url), error
        )


def _without_credentials(url: str) -> tuple[str, _Handler]:
    """The URL without its user info, and a handler that sends that as HTTP basic auth
    (urllib does not read credentials from a URL)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, default_handler
    host = parts.netloc.rpartition("@")[2]
    username, password = unquote(parts.username), unquote(parts.password or "")

    def handler(
        url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, username, password)

    return parts._replace(netloc=host).geturl(), handler
