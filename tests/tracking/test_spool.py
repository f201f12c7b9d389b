"""The metric spool: points survive an unreachable tracking server and reach MLflow once.

The server's absence is real where it can be (a closed loopback port, a stub HTTP server that
answers 503 or 400); where a whole RunTracker needs a store, the store is sqlite and the
outage is the reachability check answering "no". tests/server/test_outage.py stops a real
``mlflow server`` mid-training.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from visionops.cli import main
from visionops.config import TrackingConfig
from visionops.tracking import RunTracker, run, sender
from visionops.tracking.sender import TrackingRefused, deliver, is_outage
from visionops.tracking.spool import MetricSpool, SpooledBatch, spool_folder


@pytest.fixture(scope="module")
def store(new_tracking_store: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store for the module: creating one takes seconds on a loaded machine."""
    return new_tracking_store(tmp_path_factory.mktemp("store"), "mlflow.db")


@pytest.fixture
def server_up(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """Switch the reachability check of the sending thread and of ``end()`` on and off."""
    state = {"up": True}

    def answers(uri: str) -> bool:
        return state["up"]

    monkeypatch.setattr(sender, "server_answers", answers)
    monkeypatch.setattr(run, "server_answers", answers)
    return lambda up: state.update(up=up)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _points(steps: range, key: str = "loss") -> list[Metric]:
    return [Metric(key, float(step) / 10, 1_700_000_000_000 + step, step) for step in steps]


def _history(uri: str, run_id: str, key: str = "loss") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def _tracker(store: str, tmp_path: Path) -> tuple[RunTracker, Path]:
    tracker = RunTracker(
        TrackingConfig(tracking_uri=store, experiment="spool", system_metrics=False)
    )
    tracker.start({}, {})
    run_dir = tmp_path / "run"
    tracker.spool_in(run_dir)
    return tracker, run_dir


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("visionops")
    ]


def _spooled_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in spool_folder(run_dir).glob("*.json"))


def test_batches_are_files_read_back_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "tracking-spool"
    spool = MetricSpool(folder)
    spool.append("run-a", "http://tracking:5000", _points(range(1, 3)))
    spool.append("run-a", "http://tracking:5000", [Metric("loss", math.nan, 5, 3)])

    assert sorted(p.name for p in folder.iterdir()) == ["000000000.json", "000000001.json"]
    first = json.loads((folder / "000000000.json").read_text())
    assert first == {
        "run_id": "run-a",
        "tracking_uri": "http://tracking:5000",
        "points": [
            {"key": "loss", "value": 0.1, "timestamp": 1_700_000_000_001, "step": 1},
            {"key": "loss", "value": 0.2, "timestamp": 1_700_000_000_002, "step": 2},
        ],
    }
    # A second process (a resumed run, `visionops tracking replay`) sees the same batches and
    # numbers new ones after them.
    again = MetricSpool(folder)
    batches = list(again.batches())
    assert [b.sequence for b in batches] == [0, 1]
    assert math.isnan(batches[1].points[0].value)
    assert again.append("run-a", "u", _points(range(4, 5))).sequence == 2
    again.remove(batches[0])
    again.remove(batches[0])  # removing twice is harmless: two replayers may race
    assert again.num_points() == 2
    assert again.steps_by_key("run-a") == {"loss": {3, 4}}


def test_a_closed_port_is_an_outage_and_nothing_is_lost(tmp_path: Path) -> None:
    spool = MetricSpool(tmp_path / "spool")
    spool.append("run-a", f"http://127.0.0.1:{_free_port()}", _points(range(1, 4)))

    started = time.monotonic()
    result = deliver(spool)

    assert result.outage is not None and "does not answer" in result.outage
    assert result.sent_points == 0 and result.refusal is None
    assert spool.num_points() == 3
    assert time.monotonic() - started < 10, "must not wait out MLflow's retries"


class _StubServer:
    """Answers /health, and log-batch with ``status``; records the log-batch bodies."""

    def __init__(self) -> None:
        self.status = 200
        self.bodies: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(200, b"OK", "text/plain")

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                stub.bodies.append(json.loads(self.rfile.read(length)))
                if stub.status == 200:
                    self._answer(200, b"{}", "application/json")
                elif stub.status == 400:
                    error = {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad metric"}
                    self._answer(400, json.dumps(error).encode(), "application/json")
                else:
                    self._answer(stub.status, b"<html>upstream down</html>", "text/html")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[_StubServer]:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a 503 fails at once
    server = _StubServer()
    yield server
    server.httpd.shutdown()


@pytest.mark.parametrize(("status", "outage"), [(503, True), (502, True), (400, False)])
def test_server_errors_are_outages_client_errors_are_refusals(
    stub: _StubServer, tmp_path: Path, status: int, outage: bool
) -> None:
    spool = MetricSpool(tmp_path / "spool")
    spool.append("run-a", stub.url, _points(range(1, 3)))
    stub.status = status

    result = deliver(spool)

    assert (result.outage is not None) is outage
    assert (result.refusal is not None) is not outage
    if result.refusal is not None:
        assert not is_outage(result.refusal) and "bad metric" in str(result.refusal)
    assert spool.num_points() == 2, "a batch the server did not store stays spooled"

    stub.status = 200
    assert deliver(spool).sent_points == 2
    assert spool.num_points() == 0
    sent = stub.bodies[-1]
    assert sent["run_id"] == "run-a"
    assert [(int(m["step"]), int(m["timestamp"])) for m in sent["metrics"]] == [
        (1, 1_700_000_000_001),
        (2, 1_700_000_000_002),
    ], "points keep the timestamps they were logged with"


def test_an_outage_spools_warns_once_and_replays_when_the_server_is_back(
    store: str, tmp_path: Path, server_up: Callable[[bool], None], caplog: pytest.LogCaptureFixture
) -> None:
    tracker, run_dir = _tracker(store, tmp_path)
    assert tracker.run_id is not None
    tracker.log_metrics({"loss": 0.1}, step=1)
    tracker.flush()
    server_up(False)
    caplog.set_level(logging.INFO, logger="visionops")

    for step in range(2, 8):
        tracker.log_metrics({"loss": step / 10, "acc": step / 100}, step=step)
        tracker.flush()  # a checkpoint: returns, does not raise

    assert len(_spooled_files(run_dir)) == 6
    assert _history(store, tracker.run_id) == [(1, 0.1)]
    warnings = _warnings(caplog)
    assert len(warnings) == 1, warnings
    assert "unreachable" in warnings[0] and str(spool_folder(run_dir)) in warnings[0]

    server_up(True)
    tracker.flush()

    assert _spooled_files(run_dir) == []
    assert _history(store, tracker.run_id) == [(s, s / 10) for s in range(1, 8)]
    assert len(_history(store, tracker.run_id, "acc")) == 6
    assert any("replayed 12 metric points" in r.getMessage() for r in caplog.records)
    tracker.end()
    assert MlflowClient(store).get_run(tracker.run_id).info.status == "FINISHED"


def test_end_with_the_server_down_spools_the_status_and_replay_finishes_the_run(
    store: str,
    tmp_path: Path,
    server_up: Callable[[bool], None],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tracker, run_dir = _tracker(store, tmp_path)
    run_id = tracker.run_id
    assert run_id is not None
    server_up(False)
    for step in range(1, 4):
        tracker.log_metrics({"loss": step / 10}, step=step)

    tracker.end("FINISHED")  # no exception, and no minutes of MLflow retries

    assert mlflow.active_run() is None
    assert MlflowClient(store).get_run(run_id).info.status == "RUNNING"
    assert (spool_folder(run_dir) / "end.json").is_file()
    warning = _warnings(caplog)[-1]
    assert f"visionops tracking replay {run_dir}" in warning
    assert "3 metric points and the run's end (FINISHED)" in warning

    server_up(True)
    assert main(["tracking", "replay", str(run_dir), "--json"]) == 0

    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["runs"] == [
        {
            "run_dir": str(run_dir),
            "replayed_points": 3,
            "remaining_points": 0,
            "ended_with": "FINISHED",
            "problem": None,
        }
    ]
    assert MlflowClient(store).get_run(run_id).info.status == "FINISHED"
    assert _history(store, run_id) == [(1, 0.1), (2, 0.2), (3, 0.3)]
    assert MetricSpool(spool_folder(run_dir)).is_empty()


def test_replaying_a_batch_mlflow_already_has_adds_nothing(store: str, tmp_path: Path) -> None:
    run_id = (
        MlflowClient(store)
        .create_run(MlflowClient(store).create_experiment(f"dup-{tmp_path.name}"))
        .info.run_id
    )
    spool = MetricSpool(tmp_path / "spool")
    spool.append(run_id, store, _points(range(1, 6)))
    assert deliver(spool).sent_points == 5

    # The response was lost: the same batch, with its original timestamps, is sent again.
    spool.append(run_id, store, _points(range(1, 6)))
    spool.append(run_id, store, _points(range(3, 8)))
    assert deliver(spool).sent_points == 10

    assert _history(store, run_id) == [(s, s / 10) for s in range(1, 8)]


def test_a_resumed_run_sends_the_leftover_spool_and_skips_its_steps(
    store: str, tmp_path: Path, server_up: Callable[[bool], None]
) -> None:
    cfg = TrackingConfig(tracking_uri=store, experiment="spool", system_metrics=False)
    first = RunTracker(cfg)
    run_id = first.start({}, {})
    assert run_id is not None
    first.log_metrics({"loss": 0.1}, step=1)
    first.end("KILLED")
    # What a process killed during an outage leaves behind: spooled steps 2-3, a half-written
    # temp file and the end status it could not send.
    folder = spool_folder(tmp_path / "run")
    MetricSpool(folder).append(run_id, store, _points(range(2, 4)))
    (folder / ".000000001.json.x.tmp").write_text('{"run_id": ')
    MetricSpool(folder).mark_end(run_id, store, "KILLED")

    second = RunTracker(cfg)
    second.start({}, {}, resume_run_id=run_id)
    second.spool_in(tmp_path / "run")
    for step in (2, 3, 4):
        second.log_metrics({"loss": 10.0 * step}, step=step)
    second.end()

    assert _history(store, run_id) == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 40.0)]
    assert MlflowClient(store).get_run(run_id).info.status == "FINISHED"
    assert list(folder.iterdir()) == []


def test_a_refused_batch_stops_training_with_one_line_and_stays_spooled(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import RestException

    refusing = True
    send = sender.send_batch

    def refuse_while_refusing(batch: SpooledBatch, uri: str) -> None:
        if refusing:
            raise RestException({"error_code": "PERMISSION_DENIED", "message": "no write access"})
        send(batch, uri)

    tracker, run_dir = _tracker(store, tmp_path)
    monkeypatch.setattr(sender, "send_batch", refuse_while_refusing)
    tracker.log_metrics({"loss": 0.5}, step=1)

    with pytest.raises(TrackingRefused, match="no write access") as refused:
        tracker.flush()

    assert f"visionops tracking replay {run_dir}" in str(refused.value)
    assert _spooled_files(run_dir) == ["000000000.json"]
    refusing = False
    tracker.end()
    assert _spooled_files(run_dir) == []


def test_replay_command_exit_codes_and_output_dir_scan(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each batch names its server; MLflow exports the URI of earlier tests' runs.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_id = (
        MlflowClient(store)
        .create_run(MlflowClient(store).create_experiment(f"cli-{tmp_path.name}"))
        .info.run_id
    )
    outputs = tmp_path / "outputs"
    (outputs / "finished-run" / "tracking-spool").mkdir(parents=True)  # nothing left: skipped
    MetricSpool(spool_folder(outputs / "spooled-run")).append(run_id, store, _points(range(1, 4)))
    closed_port = f"http://127.0.0.1:{_free_port()}"

    code = main(["tracking", "replay", "--output-dir", str(outputs), "--tracking-uri", closed_port])
    assert code == 1
    out = capsys.readouterr().out
    assert f"{outputs / 'spooled-run'}: replayed 0 points, 3 remain" in out
    assert "finished-run" not in out

    assert main(["tracking", "replay", "--output-dir", str(outputs), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (report["replayed_points"], report["remaining_points"]) == (3, 0)
    assert _history(store, run_id) == [(1, 0.1), (2, 0.2), (3, 0.3)]

    assert main(["tracking", "replay", "--output-dir", str(outputs)]) == 0
    assert "no run folder has spooled metric points" in capsys.readouterr().out
    assert main(["tracking", "replay", str(tmp_path / "missing")]) == 2
