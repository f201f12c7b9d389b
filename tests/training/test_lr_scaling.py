"""Learning-rate scaling with the global batch, and the job-size check on batch_size."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from visionops.config import DataConfig, OptimConfig, TrainConfig
from visionops.errors import ConfigError
from visionops.training.job import build_job
from visionops.training.optim import create_optimizer, scaled_lr
from visionops.training.runtime import Runtime
from visionops.training.world import World

CPU_FP32 = Runtime(torch.device("cpu"), autocast_dtype=None, channels_last=False)


@pytest.mark.parametrize(
    ("scaling", "global_batch", "expected"),
    [
        ("none", 1024, 0.1),
        ("linear", 256, 0.1),
        ("linear", 1024, 0.4),
        ("linear", 64, 0.025),
        ("sqrt", 1024, 0.2),
        ("sqrt", 64, 0.05),
        ("sqrt", 512, 0.1 * math.sqrt(2)),
    ],
)
def test_scaled_lr_follows_the_rule(scaling: str, global_batch: int, expected: float) -> None:
    cfg = OptimConfig(lr=0.1, lr_scaling=scaling, lr_reference_batch=256)
    assert scaled_lr(cfg, global_batch) == pytest.approx(expected)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_every_parameter_group_starts_from_the_scaled_rate(optimizer: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(2, 3, 8, 8))  # materialise the lazy layer
    cfg = OptimConfig(
        optimizer=optimizer, lr=0.1, lr_scaling="linear", lr_reference_batch=128, norm_lr_scale=4
    )
    lrs = {g["name"]: g["lr"] for g in create_optimizer(model, cfg, global_batch=512).param_groups}
    assert lrs == pytest.approx({"weights": 0.4, "norm": 1.6, "biases": 0.4})
    # Without a global batch the configured rate is used as is.
    unscaled = create_optimizer(model, cfg).param_groups
    assert {g["name"]: g["lr"] for g in unscaled} == pytest.approx(
        {"weights": 0.1, "norm": 0.4, "biases": 0.1}
    )


def _config(batch_size: int, accumulation_steps: int = 1) -> TrainConfig:
    return TrainConfig(
        epochs=1,
        device="cpu",
        data=DataConfig(dataset="synthetic", synthetic_size=300, batch_size=batch_size),
        model={"name": "resnet9", "width_multiplier": 0.125},
        optim={
            "lr": 0.05,
            "lr_scaling": "linear",
            "lr_reference_batch": 64,
            "schedule": "constant",
            "accumulation_steps": accumulation_steps,
        },
    )


def test_the_job_scales_lr_by_batch_size_times_accumulation() -> None:
    job = build_job(_config(batch_size=32, accumulation_steps=4), CPU_FP32)
    lrs = job.scheduler.get_last_lr()
    assert lrs == pytest.approx([0.05 * 128 / 64] * len(lrs))
    assert job.steps_per_epoch == 270 // 128


@pytest.mark.parametrize(("batch_size", "num_processes"), [(30, 4), (10, 3)])
def test_a_batch_size_the_processes_cannot_share_is_a_config_error(
    batch_size: int, num_processes: int
) -> None:
    with pytest.raises(ConfigError, match=rf"batch_size={batch_size}: .*{num_processes} processes"):
        build_job(_config(batch_size), CPU_FP32, World(rank=0, size=num_processes))
