"""CPU latency of a registered model at batch 1, measured where the promotion runs.

The model is loaded from the registry exactly as a server would load it (``pt2`` /
torch.export, a pickled module, or an ONNX file on the runtime its MLmodel names: ONNX Runtime
or OpenVINO, as ``visionops optimize`` registers variants), fed random images of the shape its
MLmodel records (``tracking.client.image_shape``), and timed one image at a time after a
warm-up, on a given number of torch threads (the promotion policy's, one by default: a serving
worker's setting).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mlflow.exceptions import MlflowException

from visionops import names
from visionops.inference.onnx_runtimes import onnx_predictor, registered_runtime
from visionops.registry._client import RegistryError
from visionops.tracking.client import download_model, image_shape, model_metadata
from visionops.tracking.model_logging import load_pytorch_model

#: Untimed passes first: the first calls allocate buffers and pick kernels.
WARMUP_RUNS = 10


@dataclass(frozen=True)
class LatencyStats:
    p50_ms: float
    p95_ms: float
    runs: int
    warmup_runs: int
    num_threads: int
    input_shape: tuple[int, ...]


def measure_latency(
    model_uri: str,
    tracking_uri: str,
    num_runs: int,
    num_threads: int,
    num_warmup: int = WARMUP_RUNS,
) -> LatencyStats:
    """Load ``model_uri`` (from the registry at ``tracking_uri``) on the CPU and time
    ``num_runs`` single-image forward passes."""
    with tempfile.TemporaryDirectory(prefix="visionops-latency-") as folder:
        try:
            model_dir = download_model(model_uri, tracking_uri, Path(folder))
            metadata = model_metadata(model_dir)
        except (MlflowException, OSError) as exc:
            raise RegistryError(f"cannot read the model at {model_uri}: {exc}") from exc
        shape = batch_one_shape(model_uri, metadata)
        if "onnx" in metadata.flavors:
            return _time_onnx(
                model_uri, model_dir, metadata, shape, num_runs, num_threads, num_warmup
            )
        try:
            model = load_pytorch_model(str(model_dir), device="cpu")
        except (MlflowException, OSError) as exc:
            raise RegistryError(f"cannot load {model_uri} to measure its latency: {exc}") from exc
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        return time_forward(model, torch.rand(shape), num_runs, num_warmup)
    finally:
        torch.set_num_threads(previous_threads)


def _time_onnx(
    model_uri: str,
    model_dir: Path,
    metadata: Any,
    shape: tuple[int, ...],
    num_runs: int,
    num_threads: int,
    num_warmup: int,
) -> LatencyStats:
    """An ONNX variant, on the runtime it was registered for, on ``num_threads`` threads."""
    runtime = registered_runtime(metadata.metadata)
    model_file = model_dir / metadata.flavors["onnx"]["data"]
    try:
        predict = onnx_predictor(str(model_file), runtime, num_threads)
    except Exception as exc:  # the runtimes raise their own error types
        raise RegistryError(f"cannot load {model_uri} on {runtime}: {exc}") from exc
    stats = time_forward(
        lambda images: predict(images.numpy()), torch.rand(shape), num_runs, num_warmup
    )
    # The runtime's own thread pool, not torch's, did the work.
    return LatencyStats(
        stats.p50_ms, stats.p95_ms, stats.runs, stats.warmup_runs, num_threads, stats.input_shape
    )


def time_forward(
    model: Callable[[torch.Tensor], Any], example: torch.Tensor, num_runs: int, num_warmup: int
) -> LatencyStats:
    """p50/p95 wall time of ``model(example)`` in milliseconds, on torch's current threads."""
    timings_ms = []
    with torch.inference_mode():
        for _ in range(num_warmup):
            model(example)
        for _ in range(num_runs):
            start = time.perf_counter()
            model(example)
            timings_ms.append((time.perf_counter() - start) * 1000.0)
    p50, p95 = np.percentile(np.asarray(timings_ms), [50, 95])
    return LatencyStats(
        p50_ms=float(p50),
        p95_ms=float(p95),
        runs=num_runs,
        warmup_runs=num_warmup,
        num_threads=torch.get_num_threads(),
        input_shape=tuple(example.shape),
    )


def batch_one_shape(model_uri: str, metadata: Any) -> tuple[int, ...]:
    """The image shape ``model_uri``'s MLmodel records (its metadata, or an older model's
    tensor signature), with a batch dimension of 1."""
    shape = image_shape(metadata)
    if shape is None:
        raise RegistryError(
            f"{model_uri} records no fixed image shape (no {names.INPUT_SHAPE_METADATA_KEY} "
            "metadata, nor a signature with one tensor input); "
            "its latency cannot be measured"
        )
    return (1, *shape)
