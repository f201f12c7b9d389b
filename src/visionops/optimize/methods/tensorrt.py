"""``tensorrt``: TensorRT through ONNX Runtime's TensorRT execution provider, on a GPU only."""

from __future__ import annotations

from visionops.optimize.method import OptimizeContext, register_method
from visionops.optimize.variant import Variant


@register_method("tensorrt", "INT8/FP16 on TensorRT (needs an NVIDIA GPU; skipped otherwise).")
def build(ctx: OptimizeContext) -> list[Variant]:
    import onnxruntime as ort
    import torch

    if not torch.cuda.is_available():
        return [Variant.skip("tensorrt", "tensorrt", "skipped: no CUDA GPU on this machine")]
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return [
            Variant.skip(
                "tensorrt",
                "tensorrt",
                "skipped: this onnxruntime build has no TensorRT execution provider "
                "(install onnxruntime-gpu with TensorRT)",
            )
        ]
    return [
        Variant.skip("tensorrt", "tensorrt", "skipped: TensorRT measurement is not supported yet")
    ]
