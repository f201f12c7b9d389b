"""Ctrl-C (SIGINT) or SIGTERM to the ``visionops tune`` driver interrupts the sweep: nothing is
registered, the parent run is KILLED with the signal as a tag, the exit code is 128 + the
signal's number, and ``--resume`` continues it; the completed resume ends the run a lost trial
left RUNNING."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_NUM_TRIALS = 3
_EPOCHS = 2


def _interrupt(
    command: list[str], ready: Callable[[], bool], signum: signal.Signals, log: Path
) -> int:
    """Run ``command`` until ``ready()``, send it ``signum`` (the driver alone, as a terminal's
    Ctrl-C or an orchestrator's stop reaches it), and return its exit code."""
    with log.open("a") as output:
        driver = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 300  # a hung driver, not a timing assumption
        while not ready():
            assert driver.poll() is None, f"the driver exited early, see {log}"
            assert time.monotonic() < deadline, f"gave up waiting, see {log}"
            time.sleep(0.2)
        driver.send_signal(signum)
        return driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()


def _children(client: MlflowClient, parent: Run) -> list[Run]:
    return client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{names.PARENT_RUN_TAG}` = '{parent.info.run_id}'",
    )


def _assert_interrupted(client: MlflowClient, signal_name: str) -> Run:
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("visionops").experiment_id],
        filter_string=f"tags.`{names.SWEEP_TAG}` = 's'",
    )
    assert parent.info.status == "KILLED"
    assert parent.data.tags[names.SWEEP_INTERRUPTED_TAG] == signal_name
    assert client.search_registered_models() == []
    # No trial run is left RUNNING, nor FAILED by Tune's stop.
    assert {r.info.status for r in _children(client, parent)} <= {"FINISHED", "KILLED"}
    return parent


def test_sigint_and_sigterm_interrupt_a_sweep_that_then_resumes(
    tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_dir = tmp_path / "sweeps" / "s"
    flags = ["--preset", "quick", "--num-samples", str(_NUM_TRIALS), "--max-epochs", str(_EPOCHS)]
    flags += ["--search", "random", "--scheduler", "fifo", "--max-concurrent-trials", "1"]
    flags += ["--tracking-uri", tracking_uri, "--storage-path", str(sweep_dir.parent)]
    flags += ["--name", "s", "--register-as", "interrupted"]
    visionops = [sys.executable, "-m", "visionops", "tune"]
    log = tmp_path / "drivers.log"
    client = MlflowClient(tracking_uri)

    def checkpoints() -> set[Path]:
        return set(sweep_dir.glob("*/checkpoint_*"))

    # Trials run one at a time: the first has finished, the second is mid-way, one is to come.
    two_started = lambda: len(list(sweep_dir.glob("*/checkpoint_000000"))) >= 2  # noqa: E731
    assert _interrupt([*visionops, *flags], two_started, signal.SIGINT, log) == 130
    _assert_interrupted(client, "SIGINT")

    before = checkpoints()
    resume = [*visionops, "--resume", str(sweep_dir)]
    assert _interrupt(resume, lambda: bool(checkpoints() - before), signal.SIGTERM, log) == 143
    parent = _assert_interrupted(client, "SIGTERM")

    # What a driver killed with -9 can leave: the run of a trial that Tune's last experiment
    # snapshot did not know yet, RUNNING with one point (its configuration runs afresh).
    lost = client.create_run(
        parent.info.experiment_id, tags={names.PARENT_RUN_TAG: parent.info.run_id}
    ).info.run_id
    client.log_metric(lost, names.VAL_ACCURACY, 0.1, step=1)

    capsys.readouterr()
    assert main(["tune", "--resume", str(sweep_dir), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [t["status"] for t in payload["trials"]] == ["completed"] * _NUM_TRIALS
    assert payload["registered_model"] == {
        "name": "interrupted",
        "version": 1,
        "alias": "candidate",
    }
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED"
    assert names.SWEEP_INTERRUPTED_TAG not in parent.data.tags
    children = {r.info.run_id: r for r in _children(client, parent)}
    assert set(children) == {t["run_id"] for t in payload["trials"]} | {lost}
    assert children[lost].info.status == "KILLED"
    assert children[lost].data.tags[names.TRIAL_ABANDONED_TAG] == "true"
