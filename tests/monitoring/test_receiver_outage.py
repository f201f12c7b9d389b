"""The alert receiver while the tracking server is down or hung: an answer within seconds,
and no notification held up behind another; and what it logs about a refused token.

The outage test runs the real ``visionops alerts receive``. A tiny HTTP server on loopback
answers its start-up check, then stops: from then on the tracking URI is a closed port (a
server that is down), and later a socket that accepts connections and never answers (a hung
host). Nothing in the test process sets MLflow's retry variables: the command's own policy is
what is tested.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from test_alert_rollback import ALIAS, TOKEN, alert, notification, running_receiver

from visionops.monitoring.alerts import AlertRollback
from visionops.monitoring.receiver import ANSWER_WITHIN_S, create_app

#: What the issue asks: Alertmanager gets its answer within 10 s, server down or hung.
MAX_ANSWER_S = 10.0


class _StartupServer:
    """Answers the receiver's start-up check (``/health``, the login probe) with 200."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"OK" if self.path == "/health" else b"{}"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, int, Path]]:
    """The receiver's URL, the tracking server's port (stopped once it has started), its log."""
    tracking = _StartupServer()
    try:
        with running_receiver(f"http://127.0.0.1:{tracking.port}", tmp_path) as (url, log):
            tracking.stop()
            yield url, tracking.port, log
    finally:
        tracking.stop()


def _post(url: str, payload: dict[str, Any]) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = httpx.post(
        f"{url}/alerts",
        json=payload,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=MAX_ANSWER_S + 20,  # a regression fails on the bound below, not here
    )
    return response, time.monotonic() - start


def _deliver_while_one_waits(
    url: str, slow: dict[str, Any], others: list[dict[str, Any]]
) -> tuple[tuple[httpx.Response, float], list[tuple[httpx.Response, float]], float]:
    """``slow`` posted first; each of ``others`` 0.3 s later, while it waits for the registry.
    Returns its answer and seconds, theirs, and when its answer came relative to theirs."""
    with ThreadPoolExecutor(1 + len(others)) as pool:
        first: Future[tuple[httpx.Response, float]] = pool.submit(_post, url, slow)
        time.sleep(0.3)
        rest = [pool.submit(_post, url, payload) for payload in others]
        answered = [future.result() for future in rest]
        others_done = time.monotonic()
        waited = first.result()
        first_done = time.monotonic()
    return waited, answered, first_done - others_done


@pytest.mark.integration
def test_a_down_or_hung_tracking_server_is_a_503_within_seconds_blocking_nothing(
    receiver: tuple[str, int, Path],
) -> None:
    url, tracking_port, log = receiver
    rollback_a = notification(alert("model-a", "2"))
    rollback_b = notification(alert("model-b", "5", fingerprint="b0b"))
    no_rollback = notification(alert("model-c", "1", action=None, fingerprint="c0c"))

    # Down: the port is closed. MLflow's client gives up after its short retries.
    (down, down_s), [(other, _), (quiet, quiet_s)], after = _deliver_while_one_waits(
        url, rollback_a, [rollback_b, no_rollback]
    )
    assert down.status_code == 503 and down_s < MAX_ANSWER_S, (down_s, down.text)
    [outcome] = down.json()["alerts"]
    assert outcome["action"] == "failed"
    down_server = f"cannot reach the tracking server at http://127.0.0.1:{tracking_port}"
    assert down_server in outcome["reason"]
    assert "(connection refused)" in outcome["reason"]  # the registry's answer, not a timeout
    assert other.status_code == 503  # another model's alert: tried at the same time
    assert quiet.status_code == 200 and quiet.json()["alerts"][0]["action"] == "ignored"
    assert quiet_s < 2.0 and after > 0, (quiet_s, after)  # answered while the first waited

    # Hung: a socket that accepts and never answers. The receiver's deadline answers.
    with socket.socket() as hung:
        hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hung.bind(("127.0.0.1", tracking_port))
        hung.listen(16)
        (late, late_s), [(quiet, quiet_s)], after = _deliver_while_one_waits(
            url, rollback_a, [no_rollback]
        )
        assert late.status_code == 503, late.text
        assert ANSWER_WITHIN_S - 1 < late_s < MAX_ANSWER_S, late_s
        assert late.json()["detail"] == (
            f"the tracking server did not answer within {ANSWER_WITHIN_S:g} s; retry later"
        )
        assert quiet.status_code == 200 and quiet_s < 2.0 and after > 0, (quiet_s, after)
    # Closing the socket resets the connections the abandoned registry call still waits on.

    output = log.read_text()
    assert f"did not answer within {ANSWER_WITHIN_S:g} s; answered 503" in output
    assert "alert ServedModelConfidenceDropped 5ca1ab1e0ddba11: failed: cannot read" in output
    assert TOKEN not in output


def test_a_refused_token_is_logged_as_missing_wrong_or_not_a_bearer_token_never_shown(
    new_tracking_store: Callable[..., str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(AlertRollback(ALIAS, new_tracking_store(tmp_path, "mlflow.db")), TOKEN)
    client = TestClient(app)
    wrong = "wrong-token-0123456789"
    headers: dict[str, dict[str, str]] = {
        "missing": {},
        "wrong": {"Authorization": f"Bearer {wrong}"},
        "basic": {"Authorization": f"Basic {wrong}"},
        "bare": {"Authorization": wrong},  # the token without its scheme
    }

    with caplog.at_level(logging.WARNING, logger="visionops.monitoring.receiver"):
        codes = {
            case: client.post("/alerts", json={}, headers=header).status_code
            for case, header in headers.items()
        }

    assert set(codes.values()) == {401}
    not_bearer = "with an Authorization header that is not a bearer token"
    assert [record.getMessage() for record in caplog.records] == [
        "refused a request from testclient without an Authorization header",
        "refused a request from testclient with a wrong bearer token",
        f"refused a request from testclient {not_bearer}",  # Basic
        f"refused a request from testclient {not_bearer}",  # the bare token
    ]
    assert wrong not in caplog.text and TOKEN not in caplog.text
