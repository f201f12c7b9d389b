"""``visionops train --ray-workers 2``: the debug recipe as a Ray Train job of two CPU workers.

The CLI runs as its own process, as a user would start it, and starts (and stops) a local Ray
with this machine's CPUs; each worker takes one. The run is tracked in this test's SQLite store,
and Ray's files (its auth token under ``$HOME/.ray``, its session folders) stay in folders of
the test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import mlflow
import psutil
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.training import checkpoint as ckpt
from visionops.training.checkpoint_bundle import MANIFEST

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_TIMEOUT_S = 600  # the machine may be busy; the run itself takes about a minute


@pytest.fixture
def ray_env(new_tracking_store: Callable[..., str], tmp_path: Path) -> Any:
    """The CLI's environment: its own home and Ray temp folder, this test's tracking store."""
    # Short on purpose: Ray puts Unix sockets under it (at most 107 bytes a path).
    ray_tmp = tempfile.mkdtemp(prefix="vo-ray-")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "RAY_TMPDIR": ray_tmp,
        "MLFLOW_TRACKING_URI": new_tracking_store(tmp_path, "mlflow.db"),
        # Starting workers that import torch takes a while on a busy machine (default 60 s).
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600",
    }
    yield env
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _command(output_dir: Path, epochs: int, *flags: str) -> list[str]:
    return [
        *(sys.executable, "-m", "visionops", "train", "--recipe", "debug"),
        *("--ray-workers", "2", "--epochs", str(epochs), "--experiment", "ray-train"),
        *("--output-dir", str(output_dir), "--json", *flags),
    ]


def _the_only_run(client: MlflowClient, run_id: str) -> Run:
    """The experiment's one run, which must be ``run_id`` and have finished."""
    experiment = client.get_experiment_by_name("ray-train")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in runs] == [run_id]
    assert runs[0].info.status == "FINISHED"
    return runs[0]


def _ray_train_workers(home: str) -> list[psutil.Process]:
    """The Ray Train worker processes of the Ray started with ``HOME=home`` (this test's)."""
    workers = []
    for process in psutil.process_iter(["cmdline"]):
        with suppress(psutil.Error):
            title = " ".join(process.info["cmdline"] or [])
            if "RayTrainWorker" in title and process.environ().get("HOME") == home:
                workers.append(process)
    return workers


def _registered_epoch(output_dir: Path) -> int:
    """The epoch of the newest checkpoint Ray Train has registered (0: none yet)."""
    for snapshot in output_dir.glob("ray-train/*/checkpoint_manager_snapshot.json"):
        with suppress(OSError, ValueError):  # being written
            latest = json.loads(snapshot.read_text())["latest_checkpoint_result"]
            return int(latest["metrics"]["epoch"]) if latest else 0
    return 0


def test_a_two_worker_job_logs_one_run_and_restarts_from_ray_trains_checkpoint(
    tmp_path: Path, ray_env: Any
) -> None:
    """Ray Train restarts the worker group after a worker dies; rank 0 unpacks the newest
    checkpoint Ray Train holds and continues the same MLflow run, each epoch logged once."""
    epochs = 6
    output_dir = tmp_path / "outputs"
    # The controller registers reported checkpoints when it polls the workers (default: 2 s).
    ray_env = {**ray_env, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
    with (tmp_path / "stderr.txt").open("w+") as stderr:
        job = subprocess.Popen(
            _command(output_dir, epochs, "--max-restarts", "1"),
            env=ray_env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        try:
            deadline = time.monotonic() + _TIMEOUT_S
            # Killed once Ray Train holds a checkpoint, while later epochs run.
            while (registered := _registered_epoch(output_dir)) == 0:
                assert job.poll() is None and time.monotonic() < deadline, "no checkpoint"
                time.sleep(0.1)
            workers = _ray_train_workers(ray_env["HOME"])
            assert len(workers) == 2
            workers[-1].kill()
            assert registered < epochs
            stdout, _ = job.communicate(timeout=_TIMEOUT_S)
        finally:
            if job.poll() is None:
                job.kill()
        stderr.seek(0)
        log = stderr.read()
    assert job.returncode == 0, log[-5000:]
    assert "Ray Train restarted the job from its checkpoint" in log
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["epochs"] == epochs

    assert result["workers"] == 2
    _assert_one_tracked_run_with_ray_checkpoints(ray_env, output_dir, result, epochs)


def _assert_one_tracked_run_with_ray_checkpoints(
    ray_env: Any, output_dir: Path, result: dict[str, Any], epochs: int
) -> None:
    # One MLflow run for the job (rank 0 tracks), of a world of two processes.
    client = MlflowClient(ray_env["MLFLOW_TRACKING_URI"])
    run = _the_only_run(client, result["run_id"])
    assert run.data.params["world_size"] == "2"
    assert run.data.params["global_batch_size"] == "32"

    # Each epoch's metrics once, at epochs 1..N; the final metrics are those of the last epoch.
    for key in (names.TRAIN_LOSS, names.VAL_LOSS, names.VAL_ACCURACY):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(point.step for point in history) == list(range(1, epochs + 1)), key
    last_val = max(
        client.get_metric_history(run.info.run_id, names.VAL_ACCURACY), key=lambda m: m.step
    )
    assert result["metrics"][names.VAL_ACCURACY] == pytest.approx(last_val.value)

    # The model is logged by the run.
    mlflow.set_tracking_uri(ray_env["MLFLOW_TRACKING_URI"])
    try:
        assert mlflow.models.get_model_info(result["model_uri"]).run_id == run.info.run_id
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]

    # Ray Train holds the last two epochs' checkpoints, each a packed visionops checkpoint of
    # the run that resuming would continue.
    storage = Path(result["ray_storage"])
    assert storage.parent == output_dir / "ray-train"
    folders = sorted(f for f in storage.glob("checkpoint_*") if f.is_dir())
    manifests = [json.loads((f / MANIFEST).read_text()) for f in folders]
    assert sorted(m["epoch"] for m in manifests)[-2:] == [epochs - 1, epochs]
    assert {m["run_id"] for m in manifests} == {run.info.run_id}
    newest_manifest = max(manifests, key=lambda m: m["epoch"])
    newest_folder = folders[manifests.index(newest_manifest)]
    newest = ckpt.load_checkpoint(newest_folder / newest_manifest["checkpoint"])
    assert newest["run_id"] == run.info.run_id
    assert newest["progress"]["epoch"] == epochs
    # ... and the same file as the one in the run folder, which rank 0 alone wrote.
    run_dir = Path(result["run_dir"])
    assert run_dir.parent == output_dir
    assert (run_dir / "checkpoints" / newest_manifest["checkpoint"]).is_file()
