"""``visionops train --nproc N`` through the real CLI and torchrun, on CPU with gloo.

Each test runs the command as a subprocess, as a user would, tracked in its own SQLite MLflow
store; the launcher's workers are found among its child processes (by their ``RANK``) when a
test kills one. One process of the job is all the run MLflow should see.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import psutil
import pytest
import torch
import torch.nn.functional as F
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.cli import EXIT_INTERRUPTED, EXIT_USER_ERROR
from visionops.config import TrainConfig, load_config
from visionops.data import create_train_loader
from visionops.training import checkpoint as ckpt
from visionops.training.evaluate import EvalResult, evaluate
from visionops.training.job import build_job
from visionops.training.runtime import resolve_runtime, seed_everything

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXPERIMENT = "torchrun"
# 1200 synthetic images: 1080 to train on in 33 steps of 32 (16 per process), 120 to validate.
STEPS_PER_EPOCH = 33
# Generous: two cores shared with other work make a cold start of the workers take 15-40 s.
STARTUP_S = 240


def _train_argv(output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "visionops", "train", "--recipe", "debug",
        "--synthetic-size", "1200", "--no-log-model", "--experiment", EXPERIMENT,
        "--output-dir", str(output_dir), "--json", *extra,
    ]  # fmt: skip


def _env(tracking_uri: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, **extra}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Launch:
    """One ``visionops train`` process, its output in files, and every process it starts:
    leaving the ``with`` block kills whatever of them is still running."""

    def __init__(self, argv: list[str], env: dict[str, str], folder: Path, name: str) -> None:
        self.stdout_path, self.stderr_path = folder / f"{name}.out", folder / f"{name}.err"
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        # torchrun starts its workers in sessions of their own, so they are remembered here
        # for the cleanup: they would outlive a launcher that died first.
        self._seen: dict[int, psutil.Process] = {}

    def __enter__(self) -> Launch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.descendants()
        for process in [*self._seen.values()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def descendants(self) -> list[psutil.Process]:
        try:
            found = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            found = []
        for process in found:
            self._seen.setdefault(process.pid, process)
        return found

    def worker(self, rank: int) -> psutil.Process:
        """The running worker process of global rank ``rank``."""
        for process in self.descendants():
            try:
                if process.ppid() == self.proc.pid and process.environ().get("RANK") == str(rank):
                    return process
            except psutil.NoSuchProcess:
                continue
        pytest.fail(f"no worker of rank {rank} among the launcher's children")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def result(self) -> dict:
        return json.loads(self.stdout_path.read_text().strip().splitlines()[-1])

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + STARTUP_S
        while not condition():
            self.descendants()
            if self.proc.poll() is not None:
                pytest.fail(
                    f"visionops train exited ({self.proc.returncode}) before {what}:\n{self.stderr}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {STARTUP_S} s:\n{self.stderr}")
            time.sleep(0.05)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"visionops train still running {timeout} s later:\n{self.stderr}")


def _only_run(client: MlflowClient) -> Run:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, f"expected one MLflow run, got {[r.info.run_id for r in runs]}"
    return runs[0]


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _logged(client: MlflowClient, run_id: str, key: str, step: int) -> float:
    values = [m.value for m in client.get_metric_history(run_id, key) if m.step == step]
    assert len(values) == 1, f"{key} at step {step}: {values}"
    return values[0]


EPOCH_METRICS = (
    names.TRAIN_LOSS,
    names.TRAIN_ACCURACY,
    names.VAL_LOSS,
    names.VAL_ACCURACY,
    names.EPOCH_SECONDS,
)


def _assert_each_step_logged_once(client: MlflowClient, run: Run, epochs: int) -> None:
    run_id = run.info.run_id
    for key in run.data.metrics:
        steps = _steps(client, run_id, key)
        assert len(steps) == len(set(steps)), f"{key} has a step logged twice: {steps}"
        if key in EPOCH_METRICS:
            assert steps == list(range(1, epochs + 1)), f"{key}: {steps}"


def _first_batch_losses(cfg: TrainConfig, num_ranks: int) -> list[float]:
    """Each rank's loss on its share of the first global batch, with the initial weights."""
    runtime = resolve_runtime(cfg)
    seed_everything(cfg.seed, cfg.deterministic)  # as train() does before building its job
    job = build_job(cfg, runtime)
    job.model.train()  # BatchNorm normalises each rank's share with its own statistics
    losses = []
    for rank in range(num_ranks):
        loader = create_train_loader(
            job.data,
            cfg.data,
            seed=cfg.seed,
            samples_per_epoch=job.steps_per_epoch * cfg.data.batch_size,
            device=runtime.device,
            rank=rank,
            num_ranks=num_ranks,
        )
        loader.set_epoch(0, start_batch=0)
        images, labels = next(iter(loader))
        with torch.no_grad():
            logits = job.model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=cfg.optim.label_smoothing)
        losses.append(loss.item())
    return losses


def _evaluate_checkpoint(cfg: TrainConfig, checkpoint: Path) -> EvalResult:
    """The checkpointed model on the whole validation split, in this one process."""
    runtime = resolve_runtime(cfg)
    job = build_job(cfg, runtime)
    job.model.load_state_dict(ckpt.load_checkpoint(checkpoint)["model"])
    job.model.eval()
    return evaluate(job.model, job.val_loader, runtime, job.data.num_classes)


def test_two_processes_log_one_run_of_global_metrics_that_resumes_on_one(
    tmp_path: Path, tracking_uri: str
) -> None:
    outputs, env = tmp_path / "outputs", _env(tracking_uri)
    argv = _train_argv(
        outputs, "--nproc", "2", "--epochs", "3", "--log-every-n-steps", "1",
        "--checkpoint-every-n-steps", "0",
    )  # fmt: skip
    with Launch(argv, env, tmp_path, "two-processes") as job:
        job.wait_until(lambda: "epoch 1/3 done" in job.stderr, "the end of epoch 1")
        job.proc.send_signal(signal.SIGINT)  # Ctrl-C: the launcher hands it on to the workers
        code = job.wait(timeout=120)
    stderr = job.stderr
    assert code == EXIT_INTERRUPTED, stderr
    assert "distributed training stopped by SIGINT" in stderr
    assert "Traceback" not in stderr

    client = MlflowClient(tracking_uri)
    run = _only_run(client)
    run_id = run.info.run_id
    assert run.info.status == "KILLED"
    assert run.data.params["world_size"] == "2"
    assert run.data.params["global_batch_size"] == "32"
    run_dir = outputs / run_id
    cfg = load_config(run_dir / "config.yaml")

    # Validation over both ranks' shards: what one process measures on the whole split.
    epoch_end = ckpt.checkpoint_path(run_dir, STEPS_PER_EPOCH)
    val = _evaluate_checkpoint(cfg, epoch_end)
    assert _logged(client, run_id, names.VAL_ACCURACY, 1) == pytest.approx(val.accuracy)
    assert _logged(client, run_id, names.VAL_LOSS, 1) == pytest.approx(val.loss, rel=1e-5)

    # The first step's loss is the mean of both ranks' losses on their halves of the batch.
    rank0, rank1 = _first_batch_losses(cfg, num_ranks=2)
    assert abs(rank0 - rank1) > 1e-3  # else this check could not tell a rank-0-only value
    step_loss = _logged(client, run_id, names.STEP_LOSS, 1)
    assert step_loss == pytest.approx((rank0 + rank1) / 2, rel=1e-5)

    # The same run goes on in one process, from the checkpoint the Ctrl-C wrote.
    resumed = subprocess.run(
        [sys.executable, "-m", "visionops", "train", "--resume", str(run_dir), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["run_id"] == run_id
    assert result["epochs"] == 3
    run = _only_run(client)
    assert run.info.status == "FINISHED"
    _assert_each_step_logged_once(client, run, epochs=3)
    assert _steps(client, run_id, names.STEP_LOSS) == list(range(1, 3 * STEPS_PER_EPOCH + 1))
    final = ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir)[0])
    assert final["progress"]["step"] == 3 * STEPS_PER_EPOCH


def _node_argv(tmp_path: Path, node_rank: int, endpoint: str) -> list[str]:
    return _train_argv(
        tmp_path / f"node{node_rank}", "--nproc", "1", "--nnodes", "2",
        "--node-rank", str(node_rank), "--rdzv-endpoint", endpoint,
        "--rdzv-id", "loopback-job", "--epochs", "2",
    )  # fmt: skip


def test_two_nodes_on_loopback_train_one_run(tmp_path: Path, tracking_uri: str) -> None:
    endpoint = f"127.0.0.1:{_free_port()}"
    # One process per "node" takes all of a node's cores, but these two nodes share two.
    env = _env(tracking_uri, OMP_NUM_THREADS="1")
    with contextlib.ExitStack() as stack:
        launches = [
            stack.enter_context(
                Launch(_node_argv(tmp_path, rank, endpoint), env, tmp_path, f"node{rank}")
            )
            for rank in (0, 1)
        ]
        codes = [launch.wait(timeout=300) for launch in launches]
    assert codes == [0, 0], "\n".join(launch.stderr for launch in launches)

    # Global rank 0, on whichever node c10d gave it, reports, tracks and checkpoints.
    reporting = [launch for launch in launches if launch.stdout_path.read_text().strip()]
    assert len(reporting) == 1
    result = reporting[0].result()
    client = MlflowClient(tracking_uri)
    run = _only_run(client)
    assert result["run_id"] == run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2"
    _assert_each_step_logged_once(client, run, epochs=2)
    checkpoints = sorted(tmp_path.glob("node*/*/checkpoints/*.pt"))
    assert checkpoints, "no checkpoint written"
    assert {path.parent.parent for path in checkpoints} == {Path(result["run_dir"])}
    newest = ckpt.load_checkpoint(checkpoints[-1])
    assert newest["progress"]["step"] == 2 * STEPS_PER_EPOCH


def test_a_killed_worker_restarts_the_job_from_its_checkpoint(
    tmp_path: Path, tracking_uri: str
) -> None:
    outputs = tmp_path / "outputs"
    argv = _train_argv(
        outputs, "--nproc", "2", "--max-restarts", "1", "--epochs", "2",
        "--checkpoint-every-n-steps", "2",
    )  # fmt: skip
    with Launch(argv, _env(tracking_uri), tmp_path, "elastic") as job:
        job.wait_until(lambda: any(outputs.glob("*/checkpoints/*.pt")), "a checkpoint")
        job.worker(rank=1).kill()
        code = job.wait(timeout=300)
    stderr = job.stderr
    assert code == 0, stderr

    client = MlflowClient(tracking_uri)
    run = _only_run(client)
    run_id = run.info.run_id
    assert job.result()["run_id"] == run_id
    assert job.result()["epochs"] == 2
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2"
    # The restarted job resumed the run from a checkpoint in the middle of epoch 1.
    assert "the job restarted: resuming" in stderr
    resumed_from = re.findall(r"resuming from .*step-(\d+)\.pt", stderr)
    assert len(resumed_from) == 1
    assert 2 <= int(resumed_from[0]) < STEPS_PER_EPOCH
    assert stderr.count(f"run {run_id} on 2 processes") == 2
    _assert_each_step_logged_once(client, run, epochs=2)
    final = ckpt.load_checkpoint(ckpt.list_checkpoints(outputs / run_id)[0])
    assert final["progress"]["step"] == 2 * STEPS_PER_EPOCH


def test_a_killed_worker_without_restarts_fails_the_job_promptly(
    tmp_path: Path, tracking_uri: str
) -> None:
    outputs = tmp_path / "outputs"
    argv = _train_argv(
        outputs, "--nproc", "2", "--max-restarts", "0", "--epochs", "2",
        "--checkpoint-every-n-steps", "2",
    )  # fmt: skip
    with Launch(argv, _env(tracking_uri), tmp_path, "no-restarts") as job:
        job.wait_until(lambda: any(outputs.glob("*/checkpoints/*.pt")), "a checkpoint")
        job.worker(rank=1).kill()
        killed_at = time.monotonic()
        code = job.wait(timeout=120)
        seconds = time.monotonic() - killed_at
    stderr = job.stderr
    assert code == EXIT_USER_ERROR, stderr
    assert re.search(
        r"error: distributed training failed: worker rank [01] \(pid \d+\) exited with code "
        r"-?\d+ and the job had used its 0 restarts \(--max-restarts 0\)",
        stderr,
    ), stderr
    # gloo fails the survivor's next collective at once; 60 s leaves room for a loaded machine.
    assert seconds < 60, f"the job took {seconds:.0f} s to fail"
    assert _only_run(MlflowClient(tracking_uri)).info.status == "FAILED"
