"""``visionops serve`` against a tracking server that is down: one line, in seconds."""

from __future__ import annotations

import socket
import time

import pytest

from visionops import env
from visionops.cli import main


def test_serve_names_a_tracking_server_that_is_down_within_seconds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var, _ in env.SHORT_RETRY_POLICY:  # the command sets them; undone after the test
        monkeypatch.delenv(var.name, raising=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed once the block ends

    import visionops.serving.server  # noqa: F401  the timing below is the command's, not imports'

    start = time.monotonic()
    code = main(["serve", "--model-uri", "models:/clf@production", "--tracking-uri", url])
    seconds = time.monotonic() - start

    assert code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: cannot reach the tracking server at {url} (connection refused); start it "
        "(`visionops server start`) or point MLFLOW_TRACKING_URI at a running server"
    ]
    assert seconds < 10, seconds  # not MLflow's 4 minutes of retries
