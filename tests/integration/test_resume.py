"""Crash and stop a real `visionops train` process, resume it, compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.training import checkpoint as ckpt

pytestmark = pytest.mark.integration

# Timing metrics differ between any two runs; system metrics are sampled by wall clock.
_NON_DETERMINISTIC = ("system/", names.IMAGES_PER_SEC, names.EPOCH_SECONDS)


def _command(tracking_uri: str, output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "visionops", "train", "--recipe", "debug",
        "--deterministic", "--epochs", "3", "--synthetic-size", "1200", "--batch-size", "32",
        "--width-multiplier", "0.25", "--log-every-n-steps", "1", "--checkpoint-every-n-steps", "8",
        "--no-log-model", "--tracking-uri", tracking_uri, "--output-dir", str(output_dir),
        "--experiment", "resume", "--json", *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "VISIONOPS_PROGRESS": "plain"}


def _run_until(
    command: list[str], stop_when: Callable[[str], bool], sig: signal.Signals
) -> tuple[int, str]:
    """Start ``command``, send ``sig`` once a stderr line satisfies ``stop_when``."""
    proc = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env()
    )
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if stop_when(line):
            proc.send_signal(sig)
            break
    else:
        proc.wait()
        pytest.fail("the run ended before the signal could be sent:\n" + "".join(seen))
    _, rest_err = proc.communicate(timeout=120)
    return proc.returncode, "".join(seen) + rest_err


def _finish(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _history(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = [k for k in client.get_run(run_id).data.metrics if not k.startswith(_NON_DETERMINISTIC)]
    return {
        k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys
    }


def _final_state(run_dir: Path) -> dict:
    return ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir)[0])


def test_sigkill_mid_epoch_then_resume_is_bit_exact(
    new_tracking_store: Callable[..., str], tmp_path: Path
) -> None:
    tracking_uri = new_tracking_store(tmp_path, "mlflow.db")
    reference = _finish(_command(tracking_uri, tmp_path / "reference"))

    crashed_dir = tmp_path / "crashed"
    code, stderr = _run_until(
        _command(tracking_uri, crashed_dir),
        lambda line: "epoch 2/3 step 12/" in line,
        signal.SIGKILL,
    )
    assert code == -signal.SIGKILL
    run_id = re.search(r"run (\w+) on", stderr).group(1)
    client = MlflowClient(tracking_uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # it never got to say goodbye
    newest = ckpt.list_checkpoints(crashed_dir / run_id)[0]
    assert newest.name == "step-000000040.pt", "expected to resume from a mid-epoch checkpoint"

    resumed = _finish([*_command(tracking_uri, crashed_dir), "--resume"])

    assert resumed["run_id"] == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    expected, actual = _final_state(Path(reference["run_dir"])), _final_state(crashed_dir / run_id)
    assert expected["progress"]["step"] == actual["progress"]["step"] == 3 * (1080 // 32)
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, actual["model"][name]), f"weights differ in {name}"
    assert resumed["metrics"] == reference["metrics"]

    reference_metrics, resumed_metrics = (
        _history(client, reference["run_id"]),
        _history(client, run_id),
    )
    assert reference_metrics == resumed_metrics
    for key in client.get_run(run_id).data.metrics:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)), f"{key} has a step logged twice"


def test_sigint_checkpoints_marks_the_run_killed_and_resumes(
    new_tracking_store: Callable[..., str], tmp_path: Path
) -> None:
    tracking_uri = new_tracking_store(tmp_path, "mlflow.db")
    outputs = tmp_path / "outputs"
    code, stderr = _run_until(
        _command(tracking_uri, outputs, "--checkpoint-every-n-steps", "0"),
        lambda line: "epoch 1/3 step 5/" in line,
        signal.SIGINT,
    )

    assert code == 130
    run_id = re.search(r"run (\w+) on", stderr).group(1)
    assert f"Resume with: visionops train --resume {outputs / run_id}" in stderr
    assert "Traceback" not in stderr
    client = MlflowClient(tracking_uri)
    assert client.get_run(run_id).info.status == "KILLED"
    stopped_at = _final_state(outputs / run_id)["progress"]
    assert stopped_at["epoch"] == 0 and 5 <= stopped_at["step"] < 1080 // 32

    resumed = _finish(
        [sys.executable, "-m", "visionops", "train", "--resume", str(outputs / run_id), "--json"]
    )

    assert resumed["run_id"] == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, names.VAL_ACCURACY)] == [1, 2, 3]
