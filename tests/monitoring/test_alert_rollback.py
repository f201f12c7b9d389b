"""Alert-driven rollback: Alertmanager's webhook against a real (sqlite) MLflow registry.

Every test gets a registered model of its own with versions 1-3 (no training: each version's
source is an empty folder), whose ``production`` went to version 1, then 2, through ``promote``
(forced: nothing there to measure), so the alias history has a previous holder. The app is
driven in-process; one test starts the real ``visionops alerts receive``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.cli import main
from visionops.monitoring.alerts import AlertRollback, Notification
from visionops.monitoring.receiver import create_app
from visionops.registry.promotion import promote

ALIAS = names.PRODUCTION_ALIAS
TOKEN = "alert-token-0123456789abcdef"
ALERT_NAME = "ServedModelConfidenceDropped"
STARTS_AT = "2026-12-02T08:00:00.123456789Z"  # Alertmanager's nanoseconds, kept as sent
HISTORY_TAG = names.ALIAS_HISTORY_TAG_PREFIX + ALIAS


@dataclass(frozen=True)
class AlertRegistry:
    uri: str
    source: str

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def holder(self, name: str) -> str | None:
        holder = self.client.get_registered_model(name).aliases.get(ALIAS)
        return None if holder is None else str(holder)

    def tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(name, version).tags)

    def history(self, name: str) -> list[dict[str, Any]]:
        return json.loads(self.client.get_registered_model(name).tags[HISTORY_TAG])

    def snapshot(self, name: str) -> tuple[object, ...]:
        """Everything an alert could change: the alias, its history, every version's tags."""
        return (
            self.holder(name),
            self.history(name),
            [self.tags(name, version) for version in ("1", "2", "3")],
        )


@pytest.fixture(scope="module")
def alert_registry(
    new_tracking_store: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> AlertRegistry:
    root = tmp_path_factory.mktemp("alert-registry")
    (root / "model").mkdir()
    (root / "model" / "MLmodel").write_text("flavors: {}\n")  # promote checks the files exist
    return AlertRegistry(new_tracking_store(root, "mlflow.db"), str(root / "model"))


@pytest.fixture
def alerted_model(alert_registry: AlertRegistry) -> str:
    """A registered model of the test's own: versions 1-3, production on 2 (before it, 1)."""
    name = f"alerted-{uuid.uuid4().hex[:8]}"
    client = alert_registry.client
    client.create_registered_model(name)
    for _ in range(3):
        client.create_model_version(name, alert_registry.source)
    for version in ("1", "2"):
        result = promote(name, version, ALIAS, force=True, tracking_uri=alert_registry.uri)
        assert result.alias_moved
    assert alert_registry.holder(name) == "2"
    return name


@pytest.fixture
def alert_client(alert_registry: AlertRegistry) -> TestClient:
    app = create_app(AlertRollback(ALIAS, alert_registry.uri), TOKEN)
    return TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})


def alert(
    model: str,
    version: str,
    *,
    status: str = "firing",
    action: str | None = "rollback",
    starts_at: str = STARTS_AT,
    fingerprint: str = "5ca1ab1e0ddba11",
) -> dict[str, Any]:
    labels = {"alertname": ALERT_NAME, "severity": "critical"}
    labels |= {"model_name": model, "model_version": version}
    if action is not None:
        labels["action"] = action
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{model} v{version}: top-1 confidence fell below 0.5"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-02T09:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=confidence",
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    """Alertmanager's webhook payload, version 4, as it posts it."""
    return {
        "version": "4",
        "groupKey": '{}:{alertname="' + ALERT_NAME + '"}',
        "truncatedAlerts": 0,
        "status": alerts[0]["status"],
        "receiver": "visionops-rollback",
        "groupLabels": {"alertname": ALERT_NAME},
        "commonLabels": alerts[0]["labels"],
        "commonAnnotations": alerts[0]["annotations"],
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def test_a_rollback_alert_about_the_holder_rolls_back_once_and_is_recorded(
    alert_registry: AlertRegistry, alerted_model: str, alert_client: TestClient
) -> None:
    name, payload = alerted_model, notification(alert(alerted_model, "2"))

    response = alert_client.post("/alerts", json=payload)

    assert response.status_code == 200, response.text
    [outcome] = response.json()["alerts"]
    assert (outcome["action"], outcome["restored_version"]) == ("rolled_back", "1")
    assert (outcome["alertname"], outcome["model"], outcome["version"]) == (ALERT_NAME, name, "2")
    assert alert_registry.holder(name) == "1"
    assert alert_registry.history(name)[-1]["reason"] == "rollback from version 2"
    tags = alert_registry.tags(name, "2")

    def tag(field: str) -> str:
        return tags[names.rollback_tag(ALIAS, field)]

    assert tag("replaced_by") == "1"  # the rollback's own record, next to the alert
    assert tag(names.ROLLBACK_ALERT_NAME_FIELD) == ALERT_NAME
    assert tag(names.ROLLBACK_ALERT_FINGERPRINT_FIELD) == "5ca1ab1e0ddba11"
    assert tag(names.ROLLBACK_ALERT_STARTS_AT_FIELD) == STARTS_AT
    assert tag(names.ROLLBACK_ALERT_SUMMARY_FIELD).endswith("confidence fell below 0.5")
    assert tag(names.ROLLBACK_ALERT_URL_FIELD).startswith("http://prometheus:9090/graph")

    # Alertmanager repeats a firing alert; version 2 no longer holds the alias. (/ receives too.)
    before = alert_registry.snapshot(name)
    again = alert_client.post("/", json=payload)
    assert again.status_code == 200
    assert again.json()["alerts"][0]["action"] == "ignored"
    assert "does not hold 'production' (version 1 does)" in again.json()["alerts"][0]["reason"]
    assert alert_registry.snapshot(name) == before

    # Promoted again while the alert still fires: the same firing does not roll it back twice.
    promote(name, "2", ALIAS, force=True, tracking_uri=alert_registry.uri)
    before = alert_registry.snapshot(name)
    repeat = alert_client.post("/alerts", json=payload).json()["alerts"][0]
    assert repeat["action"] == "ignored" and "already rolled version 2 back" in repeat["reason"]
    assert alert_registry.snapshot(name) == before

    # A new firing of the same alert (a new startsAt) is a new request.
    later = notification(alert(name, "2", starts_at="2026-12-02T10:00:00Z"))
    assert alert_client.post("/alerts", json=later).json()["alerts"][0]["action"] == "rolled_back"
    assert alert_registry.holder(name) == "1"


@pytest.mark.parametrize(
    ("alert_fields", "reason"),
    [
        ({"status": "resolved"}, "resolved"),
        ({"version": "3"}, "version 3 does not hold 'production' (version 2 does)"),
        ({"action": None}, 'not labelled action="rollback"'),
        ({"action": "page"}, 'not labelled action="rollback"'),
        ({"version": ""}, "no model_version label"),
        ({"model": "no-such-model"}, "no registered model is named 'no-such-model'"),
    ],
    ids=["resolved", "not-the-holder", "no-action", "other-action", "no-version", "no-model"],
)
def test_alerts_that_ask_for_no_rollback_change_nothing(
    alert_registry: AlertRegistry,
    alerted_model: str,
    alert_client: TestClient,
    alert_fields: dict[str, Any],
    reason: str,
) -> None:
    fields = {"model": alerted_model, "version": "2", **alert_fields}
    model, version = fields.pop("model"), fields.pop("version")
    before = alert_registry.snapshot(alerted_model)

    response = alert_client.post("/alerts", json=notification(alert(model, version, **fields)))

    assert response.status_code == 200, response.text
    [outcome] = response.json()["alerts"]
    assert outcome["action"] == "ignored" and reason in outcome["reason"]
    assert alert_registry.snapshot(alerted_model) == before


def test_unauthenticated_or_malformed_requests_are_refused_with_4xx(
    alert_registry: AlertRegistry, alerted_model: str, alert_client: TestClient
) -> None:
    good = notification(alert(alerted_model, "2"))
    wrong_version = {**good, "version": "3"}
    no_fingerprint = {**good, "alerts": [{**good["alerts"][0], "fingerprint": ""}]}
    before = alert_registry.snapshot(alerted_model)
    bare = TestClient(alert_client.app)  # without the fixture's token

    def post(body: Any, authorization: str | None = f"Bearer {TOKEN}") -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return bare.post("/alerts", content=content, headers=headers)

    refusals = {
        "no token": post(good, None),
        "wrong token": post(good, f"Bearer {TOKEN}x"),
        "basic auth": post(good, f"Basic {TOKEN}"),
        "no token, bad body": post(b"{not json", None),
        "not JSON": post(b"{not json"),
        "version 3": post(wrong_version),
        "no alerts": post({k: v for k, v in good.items() if k != "alerts"}),
        "empty fingerprint": post(no_fingerprint),
        "a list": post([good]),
    }

    codes = {case: response.status_code for case, response in refusals.items()}
    assert codes == {
        "no token": 401,
        "wrong token": 401,
        "basic auth": 401,
        "no token, bad body": 401,
        "not JSON": 400,
        "version 3": 422,
        "no alerts": 422,
        "empty fingerprint": 422,
        "a list": 422,
    }
    assert refusals["no token"].headers["www-authenticate"] == "Bearer"
    assert "version: Input should be '4'" in refusals["version 3"].json()["detail"]
    assert alert_client.get("/alerts").status_code == 405
    assert alert_registry.snapshot(alerted_model) == before


def test_concurrent_deliveries_of_one_alert_roll_back_once(
    alert_registry: AlertRegistry, alerted_model: str
) -> None:
    handler = AlertRollback(ALIAS, alert_registry.uri)
    payload = Notification.model_validate(notification(alert(alerted_model, "2")))
    start = threading.Barrier(4)

    def deliver(_: int) -> str:
        start.wait()
        [outcome] = handler.handle(payload)
        return outcome.action

    with ThreadPoolExecutor(4) as pool:
        actions = sorted(pool.map(deliver, range(4)))

    assert actions == ["ignored", "ignored", "ignored", "rolled_back"]
    assert alert_registry.holder(alerted_model) == "1"
    reasons = [entry["reason"] for entry in alert_registry.history(alerted_model)]
    assert reasons.count("rollback from version 2") == 1


def test_the_receiver_refuses_to_start_without_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv("VISIONOPS_ALERTS_TOKEN", raising=False)
    empty = tmp_path / "token"
    empty.write_text("\n")

    assert main(["alerts", "receive", "--port", "0"]) == 2
    error = capsys.readouterr().err
    assert "no bearer token: set VISIONOPS_ALERTS_TOKEN or pass --token-file" in error
    assert main(["alerts", "receive", "--token-file", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_receiver(tracking_uri: str, folder: Path) -> Iterator[tuple[str, Path]]:
    """The real ``visionops alerts receive`` on a free port, ready: its URL and its log. A
    SIGTERM stops it at the end, and it must exit 0."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "receiver.log"
    command = [sys.executable, "-m", "visionops", "alerts", "receive", "--port", str(port)]
    command += ["--tracking-uri", tracking_uri]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "VISIONOPS_ALERTS_TOKEN": TOKEN},
            cwd=folder,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"not ready in 60 s:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url, log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, log.read_text()


@pytest.mark.integration
def test_visionops_alerts_receive_rolls_back_over_http_and_stops_on_sigterm(
    alert_registry: AlertRegistry, alerted_model: str, tmp_path: Path
) -> None:
    with running_receiver(alert_registry.uri, tmp_path) as (url, log):
        payload = notification(alert(alerted_model, "2"))

        assert httpx.post(f"{url}/alerts", json=payload).status_code == 401
        assert alert_registry.holder(alerted_model) == "2"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        response = httpx.post(f"{url}/alerts", json=payload, headers=auth, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["alerts"][0]["action"] == "rolled_back"
        assert alert_registry.holder(alerted_model) == "1"
    output = log.read_text()
    assert "rolled_back" in output  # every outcome is logged ...
    assert TOKEN not in output  # ... and the token never
