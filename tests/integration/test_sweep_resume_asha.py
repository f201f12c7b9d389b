"""ASHA's decisions survive a ``kill -9`` of the ``visionops tune`` driver and ``--resume``.

Tune restores a sweep from its last experiment snapshot, which can be behind the scheduler's
decisions; its ASHA starts over with empty rungs (ray#30838). A trial that ASHA had stopped,
caught as unfinished by that snapshot, then trained again to the last epoch. The driver here
takes no periodic snapshot (``TUNE_GLOBAL_CHECKPOINT_S``), so the snapshot is the unlucky one
every time, not by chance of timing.

The sweep runs its trials one at a time: the first (lr 0.05) learns, the second (lr 1e-6)
does not and is stopped at the first rung, and once the third (lr 1e-6 too) has reported an
epoch the driver is killed. The same sweep also shows that ``visionops tune`` keeps its Ray
on loopback (the trials' node address) and that its Ray ends with the killed driver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_EPOCHS = 2
_TRIALS = 3
# The searcher's seed is 0: its random choices pick the values at index 2, 1, 1.
_SPACE = """
lr: {type: choice, values: [0.05, 1.0e-6, 0.05]}
weight_decay: 0.0005
momentum: 0.9
batch_size: 32
label_smoothing: 0.0
augmentations: "random_crop,horizontal_flip"
"""
#: How long Ray's processes may outlive the killed driver (they took over a minute).
_OUTLIVE_S = 5.0


def _wait_for(condition: object, what: str, limit_sec: float = 300) -> None:
    # A safety limit for a hung subprocess, not a timing assumption.
    deadline = time.monotonic() + limit_sec
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def _epochs_by_run(client: MlflowClient, parent_run_id: str) -> dict[str, int]:
    parent = client.get_run(parent_run_id)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
    )
    return {
        run.info.run_id: len(client.get_metric_history(run.info.run_id, names.VAL_ACCURACY))
        for run in children
    }


def test_a_trial_asha_stopped_before_a_kill_9_is_not_trained_after_the_resume(
    tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(_SPACE)
    sweep_dir = tmp_path / "sweeps" / "s"
    command = [
        *(sys.executable, "-m", "visionops", "tune", "--preset", "quick", "--space", str(space)),
        *("--search", "random", "--scheduler", "asha", "--max-concurrent-trials", "1"),
        *("--num-samples", str(_TRIALS), "--max-epochs", str(_EPOCHS)),
        *("--tracking-uri", tracking_uri, "--storage-path", str(sweep_dir.parent)),
        *("--name", "s", "--register-as", "asha-resumed"),
    ]
    # Nothing of the caller's Ray settings: the command keeps its Ray on loopback itself.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    environ["TUNE_GLOBAL_CHECKPOINT_S"] = "3600"
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=environ, start_new_session=True
    )
    try:
        # One trial at a time: once the third has a checkpoint, ASHA has judged the second.
        _wait_for(lambda: len(list(sweep_dir.glob("*/checkpoint_000000"))) >= 3, "trial 3")
        ray_processes = psutil.Process(driver.pid).children(recursive=True)
    finally:
        driver.kill()  # SIGKILL of the driver alone: `kill -9 PID`
        driver.wait()
    killed = time.monotonic()
    _, alive = psutil.wait_procs(ray_processes, timeout=_OUTLIVE_S)
    print(f"Ray's processes ended {time.monotonic() - killed:.1f} s after their driver")
    assert not [f"{p.pid} {p.name()}" for p in alive if p.status() != psutil.STATUS_ZOMBIE]

    client = MlflowClient(tracking_uri)
    parent_run_id = json.loads((sweep_dir / "visionops-sweep.json").read_text())["parent_run_id"]
    before = _epochs_by_run(client, parent_run_id)
    first, second = list(before)[:2]
    assert before[first] == _EPOCHS and before[second] < _EPOCHS, before  # ASHA stopped it

    assert main(["tune", "--resume", str(sweep_dir), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    after = _epochs_by_run(client, parent_run_id)
    assert after[first] == before[first] and after[second] == before[second], (before, after)
    assert sorted(t["run_id"] for t in payload["trials"]) == sorted(after)
    # The local Ray registered its node under 127.0.0.1, as the trials' runs say.
    ips = {client.get_run(run).data.tags.get(names.TRIAL_NODE_IP_TAG) for run in after}
    assert ips == {"127.0.0.1"}
