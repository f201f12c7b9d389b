from __future__ import annotations

import pytest
import torch

from visionops.config import TrainConfig
from visionops.errors import ConfigError
from visionops.training.runtime import resolve_runtime


def test_cpu_defaults_to_fp32_and_contiguous() -> None:
    runtime = resolve_runtime(TrainConfig(device="cpu"))
    assert runtime.device == torch.device("cpu")
    assert (
        runtime.autocast_dtype is None
        and not runtime.channels_last
        and not runtime.uses_grad_scaler
    )


def test_explicit_choices_are_honoured() -> None:
    runtime = resolve_runtime(TrainConfig(device="cpu", precision="bf16", channels_last="on"))
    assert runtime.autocast_dtype == torch.bfloat16
    assert runtime.memory_format == torch.channels_last
    with runtime.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled(
            "cpu"
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        resolve_runtime(TrainConfig(device="cuda"))
    assert resolve_runtime(TrainConfig(device="auto")).device.type == "cpu"


def test_fp16_needs_cuda() -> None:
    with pytest.raises(ConfigError, match="fp16"):
        resolve_runtime(TrainConfig(device="cpu", precision="fp16"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_defaults_to_bf16_channels_last() -> None:
    runtime = resolve_runtime(TrainConfig(device="auto"))
    assert runtime.device.type == "cuda" and runtime.channels_last
