"""A sweep whose driver is killed mid-sweep resumes with ``visionops tune --resume``: the
finished trial is not run again and MLflow has exactly one child run per trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_NUM_TRIALS = 3
_EPOCHS = 2
_FINISHED_MARKERS = "trial-runs/*/trial-finished.json"


def _wait_for(condition: object, what: str, limit_sec: float = 300) -> None:
    # A safety limit for a hung subprocess, not a timing assumption.
    deadline = time.monotonic() + limit_sec
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def test_a_killed_sweep_resumes_without_rerunning_or_duplicating_trials(
    tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep_dir = tmp_path / "sweeps" / "s"
    command = [
        *(sys.executable, "-m", "visionops", "tune", "--preset", "quick"),
        *("--num-samples", str(_NUM_TRIALS), "--max-epochs", str(_EPOCHS)),
        *("--search", "random", "--scheduler", "fifo", "--max-concurrent-trials", "1"),
        *("--tracking-uri", tracking_uri, "--storage-path", str(sweep_dir.parent)),
        *("--name", "s", "--register-as", "resumed"),
    ]
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Trials run one at a time: once the second has a checkpoint, the first has finished.
        _wait_for(lambda: len(list(sweep_dir.glob("*/checkpoint_000000"))) >= 2, "trial 2")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait()

    finished_before = {p: p.stat().st_mtime_ns for p in sweep_dir.glob(_FINISHED_MARKERS)}
    assert finished_before  # the first trial had finished

    assert main(["tune", "--resume", str(sweep_dir), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [t["status"] for t in payload["trials"]] == ["completed"] * _NUM_TRIALS

    client = MlflowClient(tracking_uri)
    parent = client.get_run(payload["parent_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    assert sorted(r.info.run_id for r in children) == sorted(t["run_id"] for t in payload["trials"])
    for child in children:
        history = client.get_metric_history(child.info.run_id, names.VAL_ACCURACY)
        assert sorted(m.step for m in history) == list(range(1, _EPOCHS + 1))
    # The finished trial did not train again: it would have rewritten its final report.
    for marker, mtime in finished_before.items():
        assert marker.stat().st_mtime_ns == mtime, marker
