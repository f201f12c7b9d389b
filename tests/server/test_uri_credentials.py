"""A password written into the tracking URI logs in, and is kept in no record.

Against the team stack (basic auth: nothing logs without a login), a user whose password is
only in ``--tracking-uri http://user:PASSWORD@host`` runs ``visionops train``, a sweep whose
driver is killed and that ``tune --resume`` continues with the credentials of the caller's
environment, a Ray Train job and ``visionops serve``. The runs must be logged (so the
credentials travelled, by environment, to trials and workers), and the password must be in
no param, tag, artifact, checkpoint, state file, Ray log, or line a command printed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient

from visionops import env, names
from visionops.cli import main
from visionops.tuning.sweep import SWEEP_STATE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_TIMEOUT_S = 300  # a safety limit for a hung process on a busy machine, not a timing
_CREDENTIALS = (env.MLFLOW_TRACKING_USERNAME.name, env.MLFLOW_TRACKING_PASSWORD.name)


def _wait_for(
    condition: Callable[[], object], what: str, process: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + _TIMEOUT_S
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"{what}: exit {process.returncode}\n{log.read_text()[-3000:]}")
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def secret_user(shared_stack) -> tuple[str, str]:
    """A new user of the shared stack and its password (with an '@', which the URI encodes)."""
    username, password = f"cred-{uuid.uuid4().hex[:8]}", f"pw@{uuid.uuid4().hex}"
    created = requests.post(
        f"{shared_stack.url}/api/2.0/mlflow/users/create",
        json={"username": username, "password": password},
        auth=shared_stack.admin_auth,
        timeout=30,
    )
    assert created.status_code == 200, created.text
    return username, password


@pytest.fixture
def ray_tmp() -> Iterator[Path]:
    # Short on purpose: Ray puts Unix sockets under it (at most 107 bytes a path).
    folder = Path(tempfile.mkdtemp(prefix="vo-ray-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _forget_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLflow login variables in this process (the CLI sets them), restored after the test."""
    for name in (*_CREDENTIALS, env.MLFLOW_TRACKING_URI.name):
        monkeypatch.setenv(name, "")  # recorded as unset, so the test's end unsets it again
        monkeypatch.delenv(name)


def test_a_password_in_the_tracking_uri_logs_in_and_reaches_no_record(
    shared_stack,
    secret_user: tuple[str, str],
    free_port: Callable[[], int],
    tmp_path: Path,
    ray_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    username, password = secret_user
    secret = password.split("@")[1]  # in every spelling of the password: raw, %-encoded
    host = shared_stack.url.removeprefix("http://")
    uri = f"http://{username}:{quote(password, safe='')}@{host}"
    experiment, model = f"creds-{uuid.uuid4().hex[:8]}", f"creds-model-{uuid.uuid4().hex[:8]}"
    _forget_credentials(monkeypatch)
    # Ray's session folders (logs, runtime environments) under the test, to be searched too.
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    monkeypatch.setenv("VISIONOPS_EXPERIMENT", experiment)
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    printed: list[str] = []

    def start(name: str, *argv: str) -> subprocess.Popen[bytes]:
        """``visionops ARGV`` in the background, as a user starts it; output in NAME.log."""
        with (tmp_path / f"{name}.log").open("w") as sink:
            return subprocess.Popen(
                [sys.executable, "-m", "visionops", *argv],
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # one signal ends it and the Ray it started
            )

    # train, in this process; then, while a sweep runs, a Ray Train job and a server of the
    # model train registered (it loads only if its login works), in processes of their own.
    debug = ["--recipe", "debug", "--epochs", "1", "--no-system-metrics", "--json"]
    train_dir = str(tmp_path / "train")
    code = main(
        ["train", *debug, "--tracking-uri", uri, "--register-as", model, "--output-dir", train_dir]
    )
    out, err = capfd.readouterr()
    printed += [out, err]
    assert code == 0, err
    train_run = _result(out)["run_id"]
    _forget_credentials(monkeypatch)
    ray_train = start(
        "ray-train",
        "train",
        *debug,
        "--no-log-model",
        "--ray-workers",
        "1",
        *("--tracking-uri", uri, "--output-dir", str(tmp_path / "ray-train")),
    )
    port = free_port()
    server = start(
        "serve",
        "serve",
        "--model-uri",
        f"models:/{model}/1",
        "--tracking-uri",
        uri,
        *("--port", str(port), "--reload-interval-s", "0"),
    )

    # A sweep whose driver is killed once its trial has checkpointed, then resumed here
    # with the credentials in the caller's environment and the URI from the state file.
    sweep_dir = tmp_path / "sweeps" / "s"
    driver = start(
        "tune",
        "tune",
        "--preset",
        "quick",
        "--num-samples",
        "1",
        "--max-epochs",
        "2",
        *("--search", "random", "--scheduler", "fifo", "--tracking-uri", uri, "--name", "s"),
        *("--storage-path", str(sweep_dir.parent), "--register-as", model + "-tuned"),
    )

    def checkpointed() -> bool:
        return any(sweep_dir.glob("*/checkpoint_000000"))

    try:
        _wait_for(checkpointed, "a checkpoint", driver, tmp_path / "tune.log")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    state = json.loads((sweep_dir / SWEEP_STATE).read_text())
    assert state["tracking_uri"] == shared_stack.url
    assert state["trial_base"]["tracking"]["tracking_uri"] == shared_stack.url
    # As sweeps started before the fix wrote it: the resume must take the password out.
    state["tracking_uri"] = state["trial_base"]["tracking"]["tracking_uri"] = uri
    (sweep_dir / SWEEP_STATE).write_text(json.dumps(state))
    monkeypatch.setenv(env.MLFLOW_TRACKING_USERNAME.name, username)
    monkeypatch.setenv(env.MLFLOW_TRACKING_PASSWORD.name, password)
    code = main(["tune", "--resume", str(sweep_dir), "--json"])
    out, err = capfd.readouterr()
    printed += [out, err]
    assert code == 0, err
    sweep = _result(out)
    assert [t["status"] for t in sweep["trials"]] == ["completed"]
    trial_run = sweep["trials"][0]["run_id"]

    try:
        _wait_for(lambda: _ready(port), "the model served", server, tmp_path / "serve.log")
        assert ray_train.wait(_TIMEOUT_S) == 0, (tmp_path / "ray-train.log").read_text()[-3000:]
    finally:
        for process in (server, ray_train):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(60)
    ray_train_run = _result((tmp_path / "ray-train.log").read_text())["run_id"]

    # The runs were logged, with the user's login: the credentials travelled.
    client = MlflowClient(shared_stack.url)
    history = client.get_metric_history(trial_run, names.VAL_ACCURACY)
    assert sorted(m.step for m in history) == [1, 2]  # before and after the resume
    for run_id in (train_run, trial_run, ray_train_run):
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.params["tracking.tracking_uri"] == shared_stack.url
        assert names.VAL_ACCURACY in run.data.metrics
    experiment_id = client.get_run(train_run).info.experiment_id
    everything = client.search_runs([experiment_id])
    assert {train_run, trial_run, ray_train_run, sweep["parent_run_id"]} <= {
        r.info.run_id for r in everything
    }

    # No record holds the password: params and tags of every run, logged model, model
    # version; every artifact (downloaded into the test's folder, searched with the rest).
    records = [(r.info.run_id, r.data.params, r.data.tags) for r in everything]
    records += [
        (m.model_id, m.params, m.tags) for m in client.search_logged_models([experiment_id])
    ]
    records += [
        (f"{v.name}/{v.version}", {"source": v.source or ""}, v.tags)
        for v in client.search_model_versions(f"name = '{model}'")
    ]
    for what, params, tags in records:
        assert secret not in json.dumps([params, tags]), what
    for run in everything:
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id,
            dst_path=str(tmp_path / "artifacts" / run.info.run_id),
            tracking_uri=shared_stack.url,
        )
    assert (tmp_path / "artifacts" / train_run / names.RUN_CONFIG_ARTIFACT).is_file()

    # Every file the commands wrote: config.yaml, checkpoints, the sweep's state and Ray's
    # experiment files, Ray Train's checkpoints, Ray's session logs, the commands' output.
    files = [p for root in (tmp_path, ray_tmp) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == SWEEP_STATE for p in files)
    assert any(p.suffix == ".pt" for p in files)  # checkpoints
    assert any(p.suffix in (".log", ".err", ".out") for p in ray_tmp.rglob("*"))
    leaking = [str(p) for p in files if secret.encode() in p.read_bytes()]
    assert leaking == []

    # Nor any line this process printed or logged (the others' output is in their logs).
    printed.append(caplog.text)
    leaking_lines = [line for text in printed for line in text.splitlines() if secret in line]
    assert leaking_lines == []
    assert any(f"open {shared_stack.url}" in text for text in printed)  # the UI line, bare


def _result(output: str) -> dict[str, Any]:
    """The JSON object ``--json`` printed (Ray may print lines after it)."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise AssertionError(f"no JSON result in:\n{output[-3000:]}")


def _ready(port: int) -> bool:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2)
    except httpx.TransportError:
        return False
    return answer.status_code == 200
