"""Delivering spooled metric points to MLflow, and telling an outage from a refusal.

``deliver(spool)`` sends batches oldest first and stops at the first one that cannot be sent,
so points reach MLflow in the order they were logged and nothing is skipped. Before sending to
an http(s) server it asks the server's unauthenticated ``GET /health`` (one try, 2 s): MLflow's
own client retries a refused connection with exponential backoff for minutes, which would hold
every later batch, and a run's end, behind a server that is known to be down.

An outage is a connection that fails or times out, an HTTP 5xx or a 429: the batch stays
spooled and is sent later. A 4xx (bad credentials, a revoked permission, a deleted run, an
invalid value) is a refusal: sending again would not help, so it is reported to the caller; the
batch still stays spooled until someone fixes the cause and replays it.

``SpoolSender`` runs ``deliver`` on a daemon thread whenever asked and, while the server is
unreachable, every ``RETRY_INTERVAL_SEC``; it logs one warning per outage and one line when the
spooled points have been replayed.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from visionops.config import redact_url
from visionops.errors import VisionOpsError
from visionops.tracking.spool import (
    MetricSpool,
    SpooledBatch,
    SpoolError,
    replay_command,
    spool_folder,
)

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_SEC = 2.0
RETRY_INTERVAL_SEC = 5.0
_REASON_CHARS = 160


class TrackingRefused(VisionOpsError):
    """The tracking server answered but refused spooled metric points (HTTP 4xx)."""


@dataclass
class Delivery:
    """What one pass over the spool achieved."""

    sent_points: int = 0
    outage: str | None = None  # why the server counts as unreachable
    refusal: Exception | None = None  # a 4xx or an unreadable spool file


def server_answers(tracking_uri: str) -> bool:
    """Whether an http(s) tracking server answers at all (any status below 500 counts);
    other stores (sqlite, a folder) are local and always "answer"."""
    if not tracking_uri.startswith(("http://", "https://")):
        return True
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        # MLflow's request helper, so TLS and proxy settings are the ones log_batch uses.
        response = http_request(
            get_default_host_creds(tracking_uri),
            "/health",
            "GET",
            max_retries=0,
            timeout=PROBE_TIMEOUT_SEC,
            raise_on_status=False,
        )
    except Exception:
        return False
    return int(response.status_code) < 500


def is_outage(error: BaseException) -> bool:
    """Whether ``error`` from a send means "try again later" rather than "this is wrong"."""
    if isinstance(error, MlflowException):
        # Connection errors and timeouts arrive as MlflowException without an HTTP status, which
        # MLflow maps to 500 (INTERNAL_ERROR). 429 (rate limited) passes too.
        status = int(error.get_http_status_code())
        return status >= 500 or status == 429
    return isinstance(error, OSError)  # requests' exceptions are OSErrors


def send_batch(batch: SpooledBatch, tracking_uri: str) -> None:
    MlflowClient(tracking_uri).log_batch(batch.run_id, metrics=list(batch.points), synchronous=True)


def deliver(spool: MetricSpool, tracking_uri: str | None = None) -> Delivery:
    """Send spooled batches oldest first, to ``tracking_uri`` or each batch's own server; stop
    at the first batch that cannot be sent."""
    result = Delivery()
    answers: dict[str, bool] = {}
    batches = spool.batches()
    while True:
        try:
            batch = next(batches, None)
        except SpoolError as error:
            result.refusal = error
            return result
        if batch is None:
            return result
        uri = tracking_uri or batch.tracking_uri
        if uri not in answers:
            answers[uri] = server_answers(uri)
        if not answers[uri]:
            result.outage = f"{redact_url(uri)} does not answer"
            return result
        try:
            send_batch(batch, uri)
        except Exception as error:
            if is_outage(error):
                result.outage = _short(error)
            else:
                result.refusal = error
            return result
        spool.remove(batch)
        result.sent_points += len(batch.points)


class SpoolSender:
    """Delivers ``spool`` on a daemon thread (a thread stuck in MLflow's retries must not keep
    the process alive: its batch is still spooled)."""

    def __init__(self, spool: MetricSpool, tracking_uri: str) -> None:
        self.spool = spool
        self.tracking_uri = tracking_uri
        self.refusal: Exception | None = None
        self._requests: queue.SimpleQueue[threading.Event | None] = queue.SimpleQueue()
        self._offline = False
        self._warned = False
        self._replaying = False  # sending points spooled by an outage or an earlier process
        self._replayed_points = 0
        self._stalled: threading.Event | None = None
        self._thread = threading.Thread(target=self._run, name="visionops-metrics", daemon=True)
        self._thread.start()

    def request(self) -> threading.Event:
        """Ask for a pass over the spool; the event is set when a pass after this call ends."""
        done = threading.Event()
        self._requests.put(done)
        return done

    def replay(self) -> None:
        """Send points spooled before this sender started (by a process that died)."""
        self._replaying = True
        self.request()

    def deliver_now(self, timeout: float) -> bool:
        """Request a pass and wait up to ``timeout`` seconds for it; False if it did not end.

        Once a wait has timed out, later calls do not wait until that pass ends: the points are
        spooled either way, and training should not pay the same timeout at every checkpoint.
        """
        if self._stalled is not None and not self._stalled.is_set():
            self.request()
            return False
        done = self.request()
        if done.wait(timeout):
            return True
        self._stalled = done
        if not self._warned:
            self._warned = True
            logger.warning(
                "tracking server %s is slow to answer; metric points stay spooled in %s until "
                "it does",
                self.tracking_uri,
                self.spool.describe(),
            )
        return False

    def close(self, timeout: float) -> bool:
        """One last pass, then stop the thread; False if the pass took longer than ``timeout``."""
        done = self.request()
        self._requests.put(None)
        return done.wait(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                item = self._requests.get(timeout=RETRY_INTERVAL_SEC if self._offline else None)
            except queue.Empty:
                item = threading.Event()  # a retry nobody waits for
            waiters: list[threading.Event] = []
            while True:  # one pass serves every request queued so far
                if item is None:
                    stop = True
                else:
                    waiters.append(item)
                try:
                    item = self._requests.get_nowait()
                except queue.Empty:
                    break
            self._pass()
            for waiter in waiters:
                waiter.set()

    def _pass(self) -> None:
        result = deliver(self.spool, self.tracking_uri)
        self._offline = result.outage is not None
        if result.refusal is not None:
            self.refusal = result.refusal
        if result.outage is not None:
            self._replaying = True
            if not self._warned:
                self._warned = True
                logger.warning(
                    "tracking server unreachable (%s); spooling metric points to %s, will replay",
                    result.outage,
                    self.spool.describe(),
                )
            return
        if self._replaying:
            self._replayed_points += result.sent_points
        if result.refusal is not None:
            return  # the batches after the refused one still wait
        if self._replaying and self._replayed_points:
            logger.info(
                "tracking server reachable: replayed %d metric points", self._replayed_points
            )
        # Everything is sent: the next outage, or slow spell, gets its own warning.
        self._replaying, self._replayed_points, self._warned = False, 0, False


@dataclass
class ReplayReport:
    run_dir: Path
    sent_points: int
    remaining_points: int
    ended_with: str | None = None  # the run status set after the points, if one was pending
    problem: str | None = None  # why something remains


def replay_run(run_dir: Path, tracking_uri: str | None = None) -> ReplayReport:
    """Send what ``run_dir``'s spool holds (and the run's pending end status)."""
    spool = MetricSpool(spool_folder(run_dir))
    result = deliver(spool, tracking_uri)
    problem = result.outage or (_short(result.refusal) if result.refusal else None)
    ended = None
    end = spool.pending_end()
    if problem is None and end is not None:
        uri = tracking_uri or end.tracking_uri
        if not server_answers(uri):
            problem = f"{uri} does not answer"
        else:
            try:
                MlflowClient(uri).set_terminated(end.run_id, end.status)
            except MlflowException as error:
                problem = _short(error)
            else:
                spool.clear_end()
                ended = end.status
    return ReplayReport(run_dir, result.sent_points, spool.num_points(), ended, problem)


def refusal_error(error: Exception, spool: MetricSpool) -> TrackingRefused:
    """The one-line error for a refused batch, saying where the points are and what to run."""
    where = (
        f"they stay in {spool.folder}; fix the cause, then run `{replay_command(spool.folder)}`"
        if spool.folder is not None
        else "they are lost (the run has no spool folder)"
    )
    return TrackingRefused(f"the tracking server refused metric points ({_short(error)}); {where}")


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."
