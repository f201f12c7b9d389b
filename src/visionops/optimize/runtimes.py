"""The runtimes a variant runs on: torch (eager or compiled), ONNX Runtime, OpenVINO.

``load_predictor(variant, threads)`` returns a function from a float32 NCHW batch (NumPy) to
logits (NumPy) that computes on ``threads`` CPU threads; each runtime is one registered entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from visionops._registry import Registry
from visionops.optimize.variant import Variant

Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    description: str
    load: Callable[[Variant, int], Predictor]


RUNTIMES: Registry[RuntimeSpec] = Registry("runtime")


def register_runtime(
    name: str, description: str
) -> Callable[[Callable[[Variant, int], Predictor]], Callable[[Variant, int], Predictor]]:
    def decorate(load: Callable[[Variant, int], Predictor]) -> Callable[[Variant, int], Predictor]:
        RUNTIMES.register(name, RuntimeSpec(name, description, load))
        return load

    return decorate


def load_predictor(variant: Variant, threads: int) -> Predictor:
    return RUNTIMES.get(variant.runtime).load(variant, threads)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads are a process setting: set for the measurement, then restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@register_runtime("torch", "PyTorch on the CPU (eager, or the module a method compiled).")
def _torch(variant: Variant, threads: int) -> Predictor:
    if variant.module is None:
        raise ValueError(f"variant {variant.name} has no module for the torch runtime")
    module = variant.module

    def predict(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(images)).float().numpy()

    return predict


@register_runtime("onnxruntime", "ONNX Runtime, CPU execution provider.")
def _onnxruntime(variant: Variant, threads: int) -> Predictor:
    if variant.artifact is None:
        raise ValueError(f"variant {variant.name} has no ONNX file for ONNX Runtime")
    session = onnx_session(str(variant.artifact), threads)
    input_name = session.get_inputs()[0].name

    def predict(images: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {input_name: images})[0])

    return predict


def onnx_session(path: str, threads: int) -> Any:
    """An ONNX Runtime CPU session on ``threads`` intra-op threads, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


@register_runtime("openvino", "OpenVINO runtime on the CPU device.")
def _openvino(variant: Variant, threads: int) -> Predictor:
    if variant.artifact is None:
        raise ValueError(f"variant {variant.name} has no ONNX file for OpenVINO")
    compiled = openvino_model(str(variant.artifact), threads)

    def predict(images: np.ndarray) -> np.ndarray:
        return np.asarray(compiled(images)[0])

    return predict


def openvino_model(path: str, threads: int) -> Any:
    """The ONNX file compiled for OpenVINO's CPU device on ``threads`` inference threads."""
    import openvino as ov

    core = ov.Core()
    return core.compile_model(
        path,
        "CPU",
        {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            # OpenVINO computes in bf16 where the CPU has it unless told not to: an FP32 row
            # must be FP32, and an INT8 model's unquantised layers stay as they were measured.
            "INFERENCE_PRECISION_HINT": "f32",
        },
    )
