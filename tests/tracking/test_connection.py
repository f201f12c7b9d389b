"""The tracking-server check and the translation of MLflow's errors, against a tiny real HTTP
server on loopback that answers what each test asks (401, 403, 404, 5xx, silence)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
from mlflow.tracking import MlflowClient

from visionops.cli import main
from visionops.tracking import connection
from visionops.tracking.connection import (
    TrackingServerError,
    check_tracking_server,
    command_tracking_uri,
    tracking_error,
)

PASSWORD = "s3cret-password-never-printed"


class _Stub:
    """An HTTP server answering ``/health`` with ``health``, other GETs with ``status`` and
    POSTs with ``post_status`` (default ``status``); MLflow's basic-auth texts for 401/403."""

    def __init__(self) -> None:
        self.health = 200
        self.status = 200
        self.post_status: int | None = None
        self.paths: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                self._reply(path, stub.health if path == "/health" else stub.status)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._reply(
                    self.path, stub.status if stub.post_status is None else stub.post_status
                )

            def _reply(self, path: str, status: int) -> None:
                stub.paths.append(path)
                body = {
                    200: b"OK" if path == "/health" else b"{}",
                    400: json.dumps(
                        {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad value"}
                    ).encode(),
                    401: b"You are not authenticated. Please see the docs on how to authenticate.",
                    403: b"Permission denied",
                }.get(status, b"<html>upstream trouble</html>")
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Stub]:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # MLflow's client fails at once
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
    server = _Stub()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _refusal(url: str) -> str:
    with pytest.raises(TrackingServerError) as info:
        check_tracking_server(url)
    message = str(info.value)
    assert "\n" not in message and PASSWORD not in message
    return message


# --- check_tracking_server ------------------------------------------------------------------


def test_a_server_that_answers_and_accepts_the_login_passes(stub: _Stub) -> None:
    check_tracking_server(stub.url)
    assert stub.paths == ["/health", connection.LOGIN_PROBE_ENDPOINT]


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "file:///tmp/mlruns", "/tmp/mlruns"])
def test_local_stores_are_not_probed(uri: str) -> None:
    check_tracking_server(uri)


def test_nothing_listening_is_unreachable_at_once() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    message = _refusal(url)
    assert time.monotonic() - start < 2
    assert message == (
        f"cannot reach the tracking server at {url} (connection refused); start it "
        "(`visionops server start`) or point MLFLOW_TRACKING_URI at a running server"
    )


def test_a_silent_server_is_unreachable_after_the_health_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(connection, "HEALTH_TIMEOUT_SEC", 0.5)
    with socket.socket() as listener:  # accepts connections (the backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        message = _refusal(url)
    assert time.monotonic() - start < 3
    assert message.startswith(f"cannot reach the tracking server at {url} (no answer within 0.5 s)")


def test_a_wrong_login_names_the_user_and_the_variables_not_the_password(stub: _Stub) -> None:
    stub.status = 401
    assert _refusal(stub.url) == (
        f"the tracking server at {stub.url} refused the login of user 'alice' (HTTP 401); set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account on that server"
    )


def test_a_missing_login_says_no_credentials_were_sent(
    stub: _Stub, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub.status = 401
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    assert "none was sent (MLFLOW_TRACKING_PASSWORD is not set) (HTTP 401)" in _refusal(stub.url)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    assert "asks for a login and no credentials were sent (HTTP 401)" in _refusal(stub.url)


@pytest.mark.parametrize(
    ("health", "status", "expected"),
    [
        (502, 200, "cannot reach the tracking server at {url} (/health answered HTTP 502)"),
        (200, 403, "refused user 'alice' permission for experiments/search (HTTP 403)"),
        (200, 404, "{url} answers but is not an MLflow tracking server (HTTP 404"),
        (200, 500, "the tracking server at {url} is up but fails requests (HTTP 500"),
    ],
)
def test_other_answers_are_one_line_each(
    stub: _Stub, health: int, status: int, expected: str
) -> None:
    stub.health, stub.status = health, status
    assert expected.format(url=stub.url) in _refusal(stub.url)


# --- tracking_error: what MLflow raises later, during the work ------------------------------


def _mlflow_error(call: object) -> MlflowException:
    with pytest.raises(MlflowException) as info:
        call()  # type: ignore[operator]
    return info.value


def test_a_refused_login_during_the_work(stub: _Stub) -> None:
    stub.status = 401
    error = _mlflow_error(lambda: MlflowClient(stub.url).get_experiment("1"))
    translated = tracking_error(error, stub.url)
    assert translated is not None
    assert str(translated).startswith(
        f"the tracking server at {stub.url} refused the login of user 'alice' (HTTP 401)"
    )


def test_a_refused_run_names_the_call_and_the_grant_that_would_allow_it(stub: _Stub) -> None:
    stub.status = 403
    error = _mlflow_error(lambda: MlflowClient(stub.url).create_run("1"))
    assert str(tracking_error(error, stub.url)) == (
        f"the tracking server at {stub.url} refused user 'alice' permission for runs/create "
        "(HTTP 403); it needs EDIT on the experiment: ask an admin to run `visionops admin grant "
        "--user alice --experiment EXPERIMENT --permission EDIT`"
    )


def test_a_refused_registry_change_asks_for_edit_on_the_model(stub: _Stub) -> None:
    stub.post_status = 403  # reading the model is allowed
    error = _mlflow_error(
        lambda: MlflowClient(stub.url, registry_uri=stub.url).set_model_version_tag(
            "clf", "2", "stage", "production"
        )
    )
    message = str(tracking_error(error, stub.url))
    assert "permission for model-versions/set-tag (HTTP 403)" in message
    assert (
        "EDIT on the registered model" in message and "--model MODEL --permission EDIT" in message
    )


def test_a_refusal_names_the_experiment_and_the_model_when_they_are_known(stub: _Stub) -> None:
    stub.post_status = 403
    run = _mlflow_error(lambda: MlflowClient(stub.url).create_run("1"))
    tag = _mlflow_error(
        lambda: MlflowClient(stub.url, registry_uri=stub.url).set_model_version_tag(
            "clf", "2", "stage", "production"
        )
    )
    names = {"experiment": "cats & dogs", "model": "clf"}

    assert str(tracking_error(run, stub.url, **names)).endswith(
        "`visionops admin grant --user alice --experiment 'cats & dogs' --permission EDIT`"
    )
    assert str(tracking_error(tag, stub.url, **names)).endswith(
        "`visionops admin grant --user alice --model clf --permission EDIT`"
    )
    grant = MlflowException(
        "API request to endpoint /api/2.0/mlflow/users/permissions/grant failed with error "
        "code 403 != 200",
        error_code=PERMISSION_DENIED,
    )
    assert str(tracking_error(grant, stub.url, model="clf")).endswith(
        "--model clf --permission MANAGE`"
    )
    # Both known: which of them the grant is about is not.
    assert "{--experiment EXPERIMENT | --model MODEL}" in str(
        tracking_error(grant, stub.url, **names)
    )


def test_a_command_refused_a_permission_names_its_experiment(
    stub: _Stub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stub.post_status = 403  # the login probe (a GET) passes; creating the run does not
    argv = ["train", "--recipe", "debug", "--experiment", "cats & dogs", "--register-as", "clf"]
    argv += ["--tracking-uri", stub.url, "--output-dir", str(tmp_path / "outputs")]

    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: the tracking server at {stub.url} refused user 'alice' permission for "
        "runs/create (HTTP 403); it needs EDIT on the experiment: ask an admin to run "
        "`visionops admin grant --user alice --experiment 'cats & dogs' --permission EDIT`"
    )


def test_an_unreachable_server_during_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url = f"http://127.0.0.1:{_closed_port()}"
    error = _mlflow_error(lambda: MlflowClient(url).get_experiment("1"))
    assert str(tracking_error(error, url)).startswith(
        f"cannot reach the tracking server at {url} (connection refused); start it"
    )


def test_a_server_whose_retries_ran_out_is_named(stub: _Stub) -> None:
    stub.status = 503
    error = _mlflow_error(lambda: MlflowClient(stub.url).get_experiment("1"))
    assert str(tracking_error(error, stub.url)).startswith(
        f"the tracking server at {stub.url} kept failing requests ("
    )


def test_errors_that_are_not_about_the_server_are_left_alone(stub: _Stub) -> None:
    stub.status = 400
    error = _mlflow_error(lambda: MlflowClient(stub.url).get_experiment("1"))
    assert error.error_code == "INVALID_PARAMETER_VALUE"
    assert tracking_error(error, stub.url) is None
    denied = MlflowException("denied", error_code=PERMISSION_DENIED)  # from a local store
    assert tracking_error(denied, "sqlite:///mlflow.db") is None


EXPERIMENT = ("--experiment EXPERIMENT", "experiment")
MODEL = ("--model MODEL", "registered model")


@pytest.mark.parametrize(
    ("endpoint", "needs"),
    [
        ("mlflow/runs/create", ("EDIT", *EXPERIMENT)),
        ("mlflow/runs/log-batch", ("EDIT", *EXPERIMENT)),
        ("mlflow/runs/get", ("READ", *EXPERIMENT)),
        ("mlflow/experiments/get-by-name", ("READ", *EXPERIMENT)),
        ("mlflow/experiments/delete", ("MANAGE", *EXPERIMENT)),
        ("mlflow/experiments/permissions/create", ("MANAGE", *EXPERIMENT)),
        ("mlflow/model-versions/set-tag", ("EDIT", *MODEL)),
        ("mlflow/registered-models/get", ("READ", *MODEL)),
        ("mlflow/registered-models/permissions/create", ("MANAGE", *MODEL)),
        (
            "mlflow/users/permissions/grant",
            (
                "MANAGE",
                "{--experiment EXPERIMENT | --model MODEL}",
                "experiment or registered model",
            ),
        ),
        ("mlflow/users/create", (None, "", "")),
    ],
)
def test_the_permission_each_call_needs(endpoint: str, needs: tuple[str | None, str, str]) -> None:
    assert connection._needed_permission(endpoint) == needs


def test_a_refusal_without_an_endpoint_quotes_the_server(stub: _Stub) -> None:
    error = MlflowException("Permission denied\nmore", error_code=PERMISSION_DENIED)
    assert str(tracking_error(error, stub.url)) == (
        f"the tracking server at {stub.url} refused user 'alice' permission (HTTP 403: "
        "Permission denied); ask an admin for the permission (`visionops admin grant ...`)"
    )


def test_a_password_in_the_url_is_masked(stub: _Stub) -> None:
    stub.status = 401
    url = stub.url.replace("http://", f"http://alice:{PASSWORD}@")
    assert f"at http://alice:***@{stub.url.removeprefix('http://')} refused" in _refusal(url)


def test_the_uri_a_command_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIONOPS_TRACKING_URI", "http://from-visionops:5000")
    assert command_tracking_uri("http://explicit:5000") == "http://explicit:5000"
    assert command_tracking_uri(None) == mlflow.get_tracking_uri()  # MLflow's own resolution
    assert command_tracking_uri(None, config_env=True) == "http://from-visionops:5000"
