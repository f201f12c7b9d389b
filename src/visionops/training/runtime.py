"""Device, precision, memory format, compilation, seeding and determinism for one training
run."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from visionops import env
from visionops.config import TrainConfig
from visionops.errors import ConfigError
from visionops.models.compression import COMPRESSIONS


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: full fp32
    channels_last: bool
    compile: bool = False  # torch.compile the model (training and evaluation)

    @property
    def uses_grad_scaler(self) -> bool:
        # bf16 has fp32's exponent range; only fp16 gradients underflow without loss scaling.
        return self.autocast_dtype == torch.float16

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self) -> AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def describe(self) -> str:
        precision = (
            "fp32"
            if self.autocast_dtype is None
            else str(self.autocast_dtype).removeprefix("torch.")
        )
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return (
            f"{name} ({self.device}), {precision}, channels_last={self.channels_last}, "
            f"compile={self.compile}"
        )


def resolve_runtime(cfg: TrainConfig, local_rank: int = 0) -> Runtime:
    """Pick device, autocast dtype, memory format and compilation from the config and the
    hardware; the ``local_rank``-th process of a machine gets its own GPU."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "invalid configuration: device='cuda' but no CUDA device is available; use cpu or auto"
        )
    kind = cfg.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device("cpu")
    if kind == "cuda":
        # A launcher that gives each process only its own GPU (CUDA_VISIBLE_DEVICES per
        # process) leaves fewer visible devices than local ranks: hence the modulo.
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    on_cuda = device.type == "cuda"
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if cfg.precision == "auto":
        autocast_dtype = torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else None
    else:
        autocast_dtype = dtypes[cfg.precision]
    if autocast_dtype == torch.float16 and not on_cuda:
        raise ConfigError(
            "invalid configuration: precision='fp16' needs a CUDA device; use bf16 or fp32 on CPU"
        )
    # channels_last speeds up convolutions on tensor cores; on CPU it is often slower.
    channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and on_cuda)
    # Compiling costs tens of seconds up front (35 s for the debug recipe on 2 CPU cores, a
    # run of 19 s eagerly): auto spends them on CUDA only. A network inductor cannot compile
    # stays eager under auto (check_names refuses compile=on for it).
    compression = cfg.model.compression
    compilable = compression not in COMPRESSIONS or COMPRESSIONS.get(compression).compilable
    compile_model = cfg.compile == "on" or (cfg.compile == "auto" and on_cuda and compilable)
    return Runtime(device, autocast_dtype, channels_last, compile_model)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs a fixed workspace for reproducible matmuls; it must be set before the
        # first CUDA matmul, which has not happened yet at this point.
        env.CUBLAS_WORKSPACE_CONFIG.set_default(":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def capture_rng_state() -> dict[str, Any]:
    """Every RNG that training draws from, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy["bit_generator"],
            "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
            "has_gauss": numpy["has_gauss"],
            "gauss": numpy["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
