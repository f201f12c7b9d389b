"""``onnx``: the source model exported to ONNX, in FP32, on ONNX Runtime."""

from __future__ import annotations

from visionops.optimize.method import OptimizeContext, register_method
from visionops.optimize.variant import Variant


@register_method("onnx", "FP32 ONNX (dynamo exporter) on ONNX Runtime.")
def build(ctx: OptimizeContext) -> list[Variant]:
    return [Variant("onnx", "onnx", "onnxruntime", "fp32", artifact=ctx.fp32_onnx)]
