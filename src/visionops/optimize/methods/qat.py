"""``qat``: quantisation-aware training (torchao PT2E), exported as an INT8 QDQ ONNX file.

    visionops optimize --model-uri models:/clf/3 --methods qat --finetune-epochs 2

The source is fine-tuned with INT8 fake quantisation in the graph (``compression=qat``, an
ordinary tracked run), so the weights learn to live with the rounding. ``convert_pt2e`` then
turns it into quantize/dequantize ops around FP32 ones, which the dynamo ONNX exporter writes
as QuantizeLinear/DequantizeLinear pairs; ONNX Runtime fuses them into integer kernels.
"""

from __future__ import annotations

import numpy as np
import torch

from visionops.optimize.method import OptimizeContext, register_method
from visionops.optimize.variant import Variant


@register_method(
    "qat",
    "Quantisation-aware fine-tune (torchao PT2E, X86 INT8), QDQ ONNX on ONNX Runtime.",
)
def build(ctx: OptimizeContext) -> list[Variant]:
    import onnx
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from visionops.models.compression import ExportedNetwork
    from visionops.optimize.export import export_onnx
    from visionops.optimize.runtimes import onnx_session

    trained, run_id = ctx.finetune("qat", "qat")
    if not isinstance(trained, ExportedNetwork):
        raise TypeError(f"the qat fine-tune returned a {type(trained).__name__}, not a graph")
    # eval() first: batch norm in its inference form, and the observers' ranges frozen.
    converted = ExportedNetwork(convert_pt2e(trained.eval().exported)).eval()
    path = export_onnx(converted, ctx.file("qat-int8.onnx"), ctx.example(), ctx.options.opset)
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    if "QuantizeLinear" not in ops:
        raise ValueError(f"the exported {path.name} has no QuantizeLinear nodes: not INT8")

    # The exporter is checked against the converted model; the tolerance is the argmax, since
    # ONNX Runtime's integer kernels round differently from PyTorch's simulation of them.
    images = ctx.calibration_images
    with torch.inference_mode():
        expected = converted(images).argmax(1).numpy()
    session = onnx_session(str(path), threads=1)
    got = np.asarray(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
    agreement = float((got.argmax(1) == expected).mean())
    notes = [
        f"{ops.count('QuantizeLinear')} QuantizeLinear / {ops.count('DequantizeLinear')} "
        "DequantizeLinear nodes",
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
