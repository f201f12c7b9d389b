"""An ONNX file on ONNX Runtime or on OpenVINO, on the CPU, on a given number of threads.

Which of the two a registered ONNX model is meant for is in its MLmodel metadata under
``names.RUNTIME_METADATA_KEY`` (``visionops optimize`` writes it); a file without it runs on
ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from visionops import names

#: The runtime an ONNX model runs on when its MLmodel does not name one.
DEFAULT_ONNX_RUNTIME = "onnxruntime"

OnnxPredictor = Callable[[np.ndarray], np.ndarray]


def onnx_session(path: str, threads: int) -> Any:
    """An ONNX Runtime CPU session on ``threads`` intra-op threads, all graph optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


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
            # OpenVINO computes in bf16 where the CPU has it unless told not to: an FP32 model
            # must run in FP32, and an INT8 model's unquantised layers stay as they were measured.
            "INFERENCE_PRECISION_HINT": "f32",
        },
    )


def onnx_predictor(path: str, runtime: str, threads: int) -> OnnxPredictor:
    """A function from a float32 NCHW batch to the model's logits, on ``runtime``
    (``onnxruntime`` or ``openvino``).

    Raises:
        ValueError: an unknown runtime.
    """
    if runtime == "openvino":
        compiled = openvino_model(path, threads)

        def predict_openvino(images: np.ndarray) -> np.ndarray:
            return np.asarray(compiled(images)[0])

        return predict_openvino
    if runtime == "onnxruntime":
        session = onnx_session(path, threads)
        input_name = session.get_inputs()[0].name

        def predict_onnxruntime(images: np.ndarray) -> np.ndarray:
            return np.asarray(session.run(None, {input_name: images})[0])

        return predict_onnxruntime
    raise ValueError(f"unknown ONNX runtime {runtime!r} (known: onnxruntime, openvino)")


def registered_runtime(model_metadata: Mapping[str, Any] | None) -> str:
    """The runtime an MLmodel's ``metadata`` names for its ONNX file."""
    return str((model_metadata or {}).get(names.RUNTIME_METADATA_KEY, DEFAULT_ONNX_RUNTIME))
