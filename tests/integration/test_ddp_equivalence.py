"""DDP training computes what one process computes: the same parameters after every step.

Two CPU processes (gloo) each call the real ``visionops.training.train(cfg)``, which joins the
process group from ``RANK``/``WORLD_SIZE``/``MASTER_*`` as under torchrun. A wrapper around
``build_job`` records, in every process, the parameters after each optimizer step, the order of
forwards and gradient all-reduces (a DDP communication hook), and the parameters DDP starts from.
The same configurations then run in this process (a world of one) and the records are compared.

The model is a tiny BN-free network registered by this module: SyncBatchNorm does not run on
CPU, so a BatchNorm model's per-rank statistics would differ from a single process's by design.
Augmentations are off because each rank draws its own augmentation randomness.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from visionops import names
from visionops.config import (
    CheckpointConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrackingConfig,
    TrainConfig,
    with_fields,
)
from visionops.models import registry
from visionops.training import train
from visionops.training import trainer as trainer_module
from visionops.training.job import TrainingJob, build_job
from visionops.training.runtime import Runtime
from visionops.training.world import SINGLE_PROCESS, World

MODEL = "ddp-test-net"
WORLD_SIZE = 2
GLOBAL_BATCH = 64  # images per optimizer step in every scenario
# 430 synthetic images leave 387 for training (43 validate): 6 steps of 64 in one epoch.
STEPS = 6
SPAWN_TIMEOUT_S = 240

# Scenario name -> flat config fields; every one trains on 64 images per optimizer step.
FP32_64 = {"batch_size": 64, "accumulation_steps": 1}
FP32_16x4 = {"batch_size": 16, "accumulation_steps": 4}
# The classic (DataLoader + sampler) loader shards differently from the device loader; with no
# augmentation both give bit-identical pixels, so the baselines may use either.
DDP_SCENARIOS: dict[str, dict[str, Any]] = {
    "fp32-64": FP32_64,
    "fp32-16x4-classic": FP32_16x4 | {"loader": "classic"},
    "bf16-16x4": FP32_16x4 | {"precision": "bf16"},
}
SINGLE_SCENARIOS: dict[str, dict[str, Any]] = {
    "fp32-64": FP32_64,
    "fp32-16x4": FP32_16x4,
    "bf16-16x4": FP32_16x4 | {"precision": "bf16"},
}

Record = dict[str, Any]


class _TinyNet(nn.Module):
    """conv -> ReLU -> global average -> linear: weights, biases, no normalisation."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.conv(images)).mean(dim=(2, 3)))


def _tiny_net(
    num_classes: int, small_input_stem: bool = True, width_multiplier: float = 1.0
) -> nn.Module:
    return _TinyNet(num_classes)


def _register_tiny_model() -> None:
    if MODEL not in registry.list_models():
        registry.register_model(MODEL, "BN-free test network")(_tiny_net)


def _config(root: Path, **fields: Any) -> TrainConfig:
    """One epoch of 6 steps, deterministic fp32 on CPU, tracked in ``root``'s store."""
    base = TrainConfig(
        epochs=1,
        seed=3,
        deterministic=True,
        device="cpu",
        precision="fp32",
        channels_last="off",
        data=DataConfig(
            dataset="synthetic",
            synthetic_size=430,
            image_size=16,
            augmentations=(),
            batch_size=GLOBAL_BATCH,
            eval_batch_size=50,
            loader="device",
        ),
        model=ModelConfig(name=MODEL),
        # A one-cycle schedule changes the rate every step: a step out of line would show. The
        # rate scales with the global batch (64 -> 0.2); a per-rank batch would halve it.
        optim=OptimConfig(
            lr=0.4,
            lr_scaling="linear",
            lr_reference_batch=128,
            schedule="onecycle",
            warmup_epochs=0.5,
        ),
        tracking=TrackingConfig(
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            experiment="ddp-equivalence",
            log_every_n_steps=1,
            system_metrics=False,
            log_model=False,
        ),
        checkpoint=CheckpointConfig(output_dir=root / "outputs"),
    )
    return with_fields(base, **fields)


def _parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _recording(record: Record) -> Callable[..., TrainingJob]:
    """``build_job`` that also records into ``record`` what the job then does."""

    def build(cfg: TrainConfig, runtime: Runtime, world: World = SINGLE_PROCESS) -> TrainingJob:
        job = build_job(cfg, runtime, world)
        record.update(initial=_parameters(job.model), steps=[], events=[])

        def after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            record["steps"].append(_parameters(job.model))
            record["events"].append("step")

        def before_forward(module: nn.Module, inputs: Any) -> None:
            if module.training:  # validation forwards are not part of a step
                record["events"].append("forward")

        # Unannotated: DDP checks the annotations, which this module's __future__ import turns
        # into strings it rejects.
        def counting_allreduce(state, bucket):
            record["events"].append("allreduce")
            return allreduce_hook(state, bucket)  # what DDP does without a hook

        job.optimizer.register_step_post_hook(after_step)
        job.model.register_forward_pre_hook(before_forward)
        if isinstance(job.train_model, DistributedDataParallel):
            job.train_model.register_comm_hook(None, counting_allreduce)
        return job

    return build


def _run_recorded(cfg: TrainConfig, monkeypatch: pytest.MonkeyPatch) -> Record:
    record: Record = {}
    monkeypatch.setattr(trainer_module, "build_job", _recording(record))
    result = train(cfg)
    record.update(
        metrics=result.metrics, run_id=result.run_id, tracking_uri=cfg.tracking.tracking_uri
    )
    return record


def _isolate(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """What tests/conftest.py's autouse fixture does, for module-scoped fixtures (they run
    before it) and for the spawned workers."""
    for name in list(os.environ):
        if name.startswith(("VISIONOPS_", "MLFLOW_")):
            monkeypatch.delenv(name)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VISIONOPS_PROGRESS", "plain")
    monkeypatch.setenv("VISIONOPS_CACHE_DIR", str(root / "dataset-cache"))
    monkeypatch.chdir(root)
    # Registered in a copy of the registry, so no other test sees the test model.
    monkeypatch.setattr(registry.MODELS, "_entries", dict(registry.MODELS._entries))
    _register_tiny_model()


def _worker(rank: int, root: str, ports: dict[str, int]) -> None:
    """One rank of the job: every DDP scenario in turn, each a ``train`` call of its own."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch, Path(root))
        # Two single-threaded processes share this machine's cores without oversubscribing them.
        torch.set_num_threads(1)
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(WORLD_SIZE))
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        for name, fields in DDP_SCENARIOS.items():
            # train() creates the group from the environment and destroys it on return; a fresh
            # port per scenario avoids reusing a port the last store may still hold.
            monkeypatch.setenv("MASTER_PORT", str(ports[name]))
            record = _run_recorded(_config(Path(root), **fields), monkeypatch)
            torch.save(record, Path(root) / f"{name}-rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory, new_tracking_store: Callable[..., str]) -> Path:
    """The runs' folder and its MLflow store (``root/mlflow.db``), shared by every run here."""
    folder = tmp_path_factory.mktemp("ddp-equivalence")
    new_tracking_store(folder, "mlflow.db")
    return folder


@pytest.fixture(scope="module")
def ddp_runs(root: Path) -> dict[str, list[Record]]:
    """scenario -> [rank 0's record, rank 1's record], from one spawned job of 2 processes."""
    ports = {name: _free_port() for name in DDP_SCENARIOS}
    context = mp.spawn(_worker, args=(str(root), ports), nprocs=WORLD_SIZE, join=False)
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    try:
        while not context.join(timeout=5):  # raises if a worker failed
            if time.monotonic() > deadline:
                pytest.fail(f"the DDP workers did not finish within {SPAWN_TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    return {
        name: [
            torch.load(root / f"{name}-rank{rank}.pt", weights_only=False)
            for rank in range(WORLD_SIZE)
        ]
        for name in DDP_SCENARIOS
    }


@pytest.fixture(scope="module")
def single_runs(root: Path) -> dict[str, Record]:
    """scenario -> record of the same configuration trained in this process alone."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch, root)
        return {
            name: _run_recorded(_config(root, **fields), monkeypatch)
            for name, fields in SINGLE_SCENARIOS.items()
        }


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[name] - b[name]).abs().max().item() for name in a)


def _assert_close_every_step(
    actual: Record, expected: Record, *, rtol: float, atol: float
) -> float:
    """Parameters within tolerance after each of the ``STEPS`` steps; returns the largest
    difference seen."""
    assert len(actual["steps"]) == len(expected["steps"]) == STEPS
    for step, (got, want) in enumerate(zip(actual["steps"], expected["steps"], strict=True), 1):
        for name in want:
            try:
                torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=atol)
            except AssertionError as error:
                raise AssertionError(f"step {step}, {name}: {error}") from None
    return max(
        _max_abs_diff(got, want)
        for got, want in zip(actual["steps"], expected["steps"], strict=True)
    )


def _logged(record: Record, metric: str) -> list[float]:
    """The values of ``metric`` the run's rank 0 logged to MLflow, by step."""
    client = MlflowClient(record["tracking_uri"])
    history = client.get_metric_history(record["run_id"], metric)
    return [point.value for point in sorted(history, key=lambda point: point.step)]


@pytest.mark.integration
def test_ranks_hold_identical_parameters_after_every_step(
    ddp_runs: dict[str, list[Record]],
) -> None:
    for name, (main, other) in ddp_runs.items():
        assert len(main["steps"]) == len(other["steps"]) == STEPS, name
        for params in main["initial"]:
            assert torch.equal(main["initial"][params], other["initial"][params]), name
        for step, (got, want) in enumerate(zip(other["steps"], main["steps"], strict=True), 1):
            for params in want:
                assert torch.equal(got[params], want[params]), f"{name}, step {step}, {params}"
        # They trained: every tensor moved at the first step.
        assert all(
            not torch.equal(main["steps"][0][params], main["initial"][params])
            for params in main["initial"]
        ), name


@pytest.mark.integration
def test_ddp_matches_one_process_with_the_same_global_batch(
    ddp_runs: dict[str, list[Record]], single_runs: dict[str, Record]
) -> None:
    ddp, single = ddp_runs["fp32-64"][0], single_runs["fp32-64"]
    for params in single["initial"]:
        assert torch.equal(ddp["initial"][params], single["initial"][params])
    worst = _assert_close_every_step(ddp, single, rtol=1e-4, atol=1e-6)
    print(f"DDP 2 x 32 vs one process 64: max |delta param| = {worst:.3g}")

    # Metrics are over the whole job, as one process computes them.
    for metric in (
        names.TRAIN_LOSS,
        names.TRAIN_ACCURACY,
        names.VAL_LOSS,
        names.VAL_ACCURACY,
    ):
        assert _logged(ddp, metric) == pytest.approx(_logged(single, metric), rel=1e-4), metric
    assert len(_logged(ddp, names.STEP_LOSS)) == STEPS
    assert _logged(ddp, names.STEP_LOSS) == pytest.approx(
        _logged(single, names.STEP_LOSS), rel=1e-4
    )
    params = MlflowClient(ddp["tracking_uri"]).get_run(ddp["run_id"]).data.params
    assert (params["world_size"], params["global_batch_size"]) == ("2", "64")
    assert float(params["effective_lr"]) == pytest.approx(0.2)
    assert ddp_runs["fp32-64"][1]["run_id"] == ddp["run_id"]  # one run, shared by the ranks


def test_accumulating_4_x_16_matches_one_batch_of_64(single_runs: dict[str, Record]) -> None:
    accumulated, whole = single_runs["fp32-16x4"], single_runs["fp32-64"]
    assert accumulated["events"] == (["forward"] * 4 + ["step"]) * STEPS
    worst = _assert_close_every_step(accumulated, whole, rtol=1e-4, atol=1e-6)
    print(f"one process, 4 x 16 vs 64: max |delta param| = {worst:.3g}")
    assert accumulated["metrics"][names.VAL_LOSS] == pytest.approx(
        whole["metrics"][names.VAL_LOSS], rel=1e-4
    )


@pytest.mark.integration
def test_ddp_accumulating_4_x_16_matches_one_batch_of_64(
    ddp_runs: dict[str, list[Record]], single_runs: dict[str, Record]
) -> None:
    ddp, whole = ddp_runs["fp32-16x4-classic"][0], single_runs["fp32-64"]
    worst = _assert_close_every_step(ddp, whole, rtol=1e-4, atol=1e-6)
    print(f"DDP 2 x 8 x 4 micro-batches vs one process 64: max |delta param| = {worst:.3g}")
    assert ddp["metrics"][names.VAL_LOSS] == pytest.approx(
        whole["metrics"][names.VAL_LOSS], rel=1e-4
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("scenario", "accumulation_steps"),
    [("fp32-64", 1), ("fp32-16x4-classic", 4), ("bf16-16x4", 4)],
)
def test_ddp_all_reduces_gradients_once_per_optimizer_step(
    ddp_runs: dict[str, list[Record]], scenario: str, accumulation_steps: int
) -> None:
    # The tiny model's gradients fill one bucket, so a synchronised backward is one all-reduce;
    # the micro-batches before the last of a step run under no_sync and all-reduce nothing.
    expected = (["forward"] * accumulation_steps + ["allreduce", "step"]) * STEPS
    for rank, record in enumerate(ddp_runs[scenario]):
        assert record["events"] == expected, f"rank {rank}"


@pytest.mark.integration
def test_bf16_autocast_with_accumulation_under_ddp_matches_one_process(
    ddp_runs: dict[str, list[Record]], single_runs: dict[str, Record]
) -> None:
    ddp, single = ddp_runs["bf16-16x4"][0], single_runs["bf16-16x4"]
    # Each rank rounds its half-batch gradient sums to bf16 (8 significant bits), one process
    # its whole batch's: the runs agree to bf16's precision, not fp32's. (The parameters move
    # ~0.07 in these 6 steps; summing instead of averaging the ranks' gradients, or a rank
    # stepping with its own, would be off by about that much.)
    worst = _assert_close_every_step(ddp, single, rtol=1e-2, atol=1e-3)
    print(f"DDP bf16 2 x 8 x 4 vs one process 16 x 4: max |delta param| = {worst:.3g}")
    assert ddp["metrics"][names.VAL_LOSS] == pytest.approx(
        single["metrics"][names.VAL_LOSS], rel=1e-2
    )
    # Autocast is in effect under DDP: the run is not the fp32 one.
    fp32_gap = _max_abs_diff(ddp_runs["fp32-16x4-classic"][0]["steps"][-1], ddp["steps"][-1])
    print(f"DDP bf16 vs DDP fp32 after {STEPS} steps: max |delta param| = {fp32_gap:.3g}")
    assert fp32_gap > 1e-5
