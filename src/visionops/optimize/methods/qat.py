"""``qat``: quantisation-aware training (torchao PT2E), exported as an INT8 QDQ ONNX file.

    visionops optimize --model-uri models:/clf/3 --methods qat --finetune-epochs 2

The source is fine-tuned with INT8 fake quantisation in the graph (``compression=qat``, an
ordinary tracked run), so the weights learn to live with the rounding. ``convert_pt2e`` then
turns it into quantize/dequantize ops around FP32 ones, which the dynamo ONNX exporter writes
as QuantizeLinear/DequantizeLinear pairs; ONNX Runtime fuses them into integer kernels.
"""

from __future__ import annotations

from typing import Any

import torch

from visionops._quiet import import_torchao
from visionops.optimize.method import OptimizeContext, register_method
from visionops.optimize.variant import Variant


@register_method(
    "qat",
    "Quantisation-aware fine-tune (torchao PT2E, X86 INT8), QDQ ONNX on ONNX Runtime.",
)
def build(ctx: OptimizeContext) -> list[Variant]:
    import onnx

    import_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from visionops.inference.onnx_runtimes import onnx_predictor
    from visionops.models.compression import ExportedNetwork
    from visionops.optimize.export import export_onnx

    trained, run_id = ctx.finetune("qat", "qat")
    if not isinstance(trained, ExportedNetwork):
        raise TypeError(f"the qat fine-tune returned a {type(trained).__name__}, not a graph")
    # eval() first: batch norm in its inference form, and the observers' ranges frozen.
    converted = ExportedNetwork(convert_pt2e(trained.eval().exported)).eval()
    path = export_onnx(converted, ctx.file("qat-int8.onnx"), ctx.example(), ctx.options.opset)
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    if "QuantizeLinear" not in ops:
        raise ValueError(f"the exported {path.name} has no QuantizeLinear nodes: not INT8")

    # The exporter is checked against the converted model; the tolerance is the argmax, since
    # ONNX Runtime's integer kernels round differently from PyTorch's simulation of them.
    images = ctx.calibration_images
    with torch.inference_mode():
        expected = converted(images).argmax(1).numpy()
    got = onnx_predictor(str(path), "onnxruntime", threads=1)(images.numpy())
    agreement = float((got.argmax(1) == expected).mean())
    quantised, layers = _int8_weight_layers(graph)
    notes = [
        f"{ops.count('QuantizeLinear')} QuantizeLinear / {ops.count('DequantizeLinear')} "
        f"DequantizeLinear nodes; torchao's X86 quantizer covered {quantised} of {layers} "
        "conv/linear layers (the others stay FP32)",
        f"ONNX Runtime agrees with the converted PyTorch model on {agreement:.1%} of "
        f"{len(images)} calibration images",
        f"fine-tuned with fake quantisation for {ctx.options.finetune_epochs} epoch(s) in run "
        f"{run_id}",
    ]
    return [
        Variant(
            "qat", "qat", "onnxruntime", "int8", artifact=path, notes=notes, finetune_run_id=run_id
        )
    ]


def _int8_weight_layers(graph: Any) -> tuple[int, int]:
    """(conv/linear layers whose weight comes through a DequantizeLinear, all of them): how much
    of the network the quantizer's patterns matched."""
    producer = {output: node.op_type for node in graph.node for output in node.output}
    layers = [node for node in graph.node if node.op_type in ("Conv", "Gemm", "MatMul")]
    quantised = [
        node
        for node in layers
        if len(node.input) > 1 and producer.get(node.input[1]) == "DequantizeLinear"
    ]
    return len(quantised), len(layers)
