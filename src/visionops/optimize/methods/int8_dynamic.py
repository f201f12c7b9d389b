"""``int8-dynamic``: ONNX Runtime dynamic INT8 quantisation of the Linear layers, on ONNX Runtime.

Dynamic quantisation stores weights in INT8 and quantises activations on the fly, batch by batch;
ORT applies it here to MatMul and Gemm only (its dynamic quantiser rewrites Gemm as MatMul),
that is to Linear layers. Convolutions stay FP32, so on a convolutional network it changes
little: the notes say how much of the network it covers, for the report.
"""

from __future__ import annotations

from pathlib import Path

from visionops.optimize.method import OptimizeContext, register_method
from visionops.optimize.methods.int8_static import preprocessed_onnx
from visionops.optimize.variant import Variant

METHOD = "int8-dynamic"
LINEAR_OPS = ("MatMul", "Gemm")
#: Nodes whose input 1 is a weight tensor, for the coverage figure.
WEIGHTED_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def _weights(path: Path) -> tuple[dict[str, int], list[str], int]:
    """(weight tensor name -> elements, the weight names of Linear nodes, float parameters) of an
    ONNX file."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    initializers = {t.name: t for t in model.graph.initializer}
    weights: dict[str, int] = {}
    linear: list[str] = []
    for node in model.graph.node:
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in initializers:
            weights[node.input[1]] = int(np.prod(initializers[node.input[1]].dims))
            if node.op_type in LINEAR_OPS:
                linear.append(node.input[1])
    params = sum(
        numpy_helper.to_array(t).size
        for t in initializers.values()
        if t.data_type
        in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    )
    return weights, linear, int(params)


def _quantised_weights(path: Path) -> dict[str, int]:
    """INT8/UINT8 initializers of the quantised file (name -> elements), scalars left out."""
    import numpy as np
    import onnx

    model = onnx.load(str(path))
    int8 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    return {
        t.name: int(np.prod(t.dims))
        for t in model.graph.initializer
        if t.data_type in int8 and int(np.prod(t.dims)) > 1
    }


@register_method(
    METHOD,
    "Dynamic INT8 of the Linear layers (MatMul/Gemm), ONNX Runtime quantisation; on ONNX Runtime.",
)
def build(ctx: OptimizeContext) -> list[Variant]:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, preprocess_note = preprocessed_onnx(ctx)
    model = onnx.load(str(source), load_external_data=False)
    linear_nodes = sum(1 for node in model.graph.node if node.op_type in LINEAR_OPS)
    if linear_nodes == 0:
        return [
            Variant.skip(
                METHOD,
                "onnxruntime",
                "skipped: the model has no MatMul/Gemm (Linear) nodes, the only ones dynamic "
                "quantisation applies to",
            )
        ]
    output = ctx.file("int8-dynamic.onnx")
    quantize_dynamic(
        str(source),
        str(output),
        op_types_to_quantize=list(LINEAR_OPS),
        weight_type=QuantType.QInt8,
    )
    if not output.exists():
        raise RuntimeError(f"quantize_dynamic wrote no model at {output}")

    weights, linear_weights, params = _weights(source)
    quantised = _quantised_weights(output)
    quantised_params = sum(quantised.values())
    share = 100 * quantised_params / params if params else 0.0
    coverage = (
        "dynamic quantisation covers Linear layers only: "
        f"{len(quantised)} of {len(weights)} weight tensors ({share:.1f}% of parameters) quantised"
    )
    convs = sum(1 for name in weights if name not in linear_weights)
    if convs:
        coverage += f"; {convs} convolution weight tensors stay FP32"
    notes = [f"{coverage} ({linear_nodes} MatMul/Gemm nodes in the model)"]
    if preprocess_note:
        notes.append(preprocess_note)
    return [Variant(METHOD, METHOD, "onnxruntime", "int8", artifact=output, notes=notes)]
