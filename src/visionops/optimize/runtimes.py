"""The runtimes a variant runs on: torch (eager or compiled), ONNX Runtime, OpenVINO.

``load_predictor(variant, threads)`` returns a function from a float32 NCHW batch (NumPy) to
logits (NumPy) that computes on ``threads`` CPU threads; each runtime is one registered entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from visionops._registry import Registry
from visionops.inference.onnx_runtimes import onnx_predictor
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
    return onnx_predictor(str(variant.artifact), "onnxruntime", threads)


@register_runtime("openvino", "OpenVINO runtime on the CPU device.")
def _openvino(variant: Variant, threads: int) -> Predictor:
    if variant.artifact is None:
        raise ValueError(f"variant {variant.name} has no ONNX file for OpenVINO")
    return onnx_predictor(str(variant.artifact), "openvino", threads)
