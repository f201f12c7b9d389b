"""``int8-pt2e``: torch-native post-training INT8 (torchao PT2E), compiled by inductor.

    visionops optimize --model-uri models:/clf/3 --methods int8-pt2e

``torch.export`` captures the graph, ``prepare_pt2e`` with the X86 quantizer inserts observers,
the calibration images set the ranges, ``convert_pt2e`` writes quantize/dequantize ops, and
``torch.compile`` with inductor freezing (what torchao documents for x86; it is set for the whole
process) fuses them into oneDNN INT8 kernels. Any step that fails on this torch gives a
"skipped: reason" row, not a traceback.
"""

from __future__ import annotations

import copy
import logging
import traceback

import torch
from torch import nn

from visionops._quiet import import_torchao
from visionops.optimize.method import OptimizeContext, register_method
from visionops.optimize.variant import Variant

logger = logging.getLogger(__name__)


@register_method(
    "int8-pt2e",
    "Static INT8 (torchao PT2E, X86 quantizer) compiled by inductor with freezing; PyTorch.",
)
def build(ctx: OptimizeContext) -> list[Variant]:
    try:
        converted = _quantize(ctx)
    except Exception as exc:  # export and quantisation raise many kinds; the row says which
        return [_skip("PT2E quantisation failed", exc)]
    try:
        compiled = _compile(converted, ctx.example())
    except Exception as exc:
        return [_skip("torch.compile (inductor, freezing) cannot compile the INT8 model", exc)]
    notes = [
        f"static INT8, calibrated on {len(ctx.calibration_images)} training images "
        "(HistogramObserver activations, per-channel weights)",
        "torch.compile with inductor freezing: oneDNN INT8 kernels",
    ]
    return [
        Variant(
            "int8-pt2e",
            "int8-pt2e",
            "torch",
            "int8",
            module=compiled,
            loggable_module=converted,
            notes=notes,
        )
    ]


def _quantize(ctx: OptimizeContext) -> nn.Module:
    import_torchao()  # often torchao's first import in `visionops optimize`
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    from visionops.models.compression import ExportedNetwork

    model = copy.deepcopy(ctx.model).eval()
    batch = torch.export.Dim("batch", min=1)
    graph = torch.export.export(model, (ctx.example(),), dynamic_shapes=({0: batch},)).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for images in ctx.calibration_batches():
            prepared(torch.from_numpy(images))
    converted = convert_pt2e(prepared)
    _drop_unused_tensors(converted)
    return ExportedNetwork(converted).eval()  # the graph's own eval() raises


def _drop_unused_tensors(graph: torch.fx.GraphModule) -> None:
    """``convert_pt2e`` keeps the FP32 weights it replaced by INT8 constants as parameters the
    graph no longer reads (a state dict five times the INT8 one): they are removed, so the size
    the report shows is what the graph runs on."""
    used = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    tensors = [*graph.named_parameters(), *graph.named_buffers()]
    for name in [name for name, _ in tensors if name not in used]:
        owner, _, attribute = name.rpartition(".")
        delattr(graph.get_submodule(owner), attribute)


def _compile(converted: nn.Module, example: torch.Tensor) -> nn.Module:
    import torch._inductor.config as inductor_config

    # torchao's x86 recipe: freezing folds the weights into constants so that the INT8
    # patterns can be prepacked into oneDNN kernels. It is set for the process, as torchao
    # documents: dynamo reads it while tracing, before torch.compile(options=...) applies (that
    # fails in the prepack pass), and patching it around each call costs ~2 ms a call. Only
    # graphs compiled for inference (no autograd) are frozen.
    inductor_config.freezing = True
    # A module in, a module (OptimizedModule) out, whatever the stubs say.
    compiled: nn.Module = torch.compile(converted)  # type: ignore[assignment]
    # torch.compile is lazy: the first call compiles, so a failure shows here, not in a
    # measurement. Inference mode, as the torch runtime calls it.
    with torch.inference_mode():
        compiled(example)
    return compiled


def _skip(what: str, exc: BaseException) -> Variant:
    logger.debug("int8-pt2e: %s", what, exc_info=exc)
    versions = f"torch {torch.__version__.split('+')[0]}, torchao {_torchao_version()}"
    return Variant.skip("int8-pt2e", "torch", f"skipped: {what} on {versions}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    """The innermost error's first line, or, for a bare assertion, where it failed."""
    inner = getattr(exc, "inner_exception", None) or exc.__cause__ or exc
    message = str(inner).strip().splitlines()[0] if str(inner).strip() else ""
    if message:
        return f"{type(inner).__name__}: {message}"
    frames = traceback.extract_tb(inner.__traceback__)
    if not frames:
        return type(inner).__name__
    last = frames[-1]
    where = "/".join(last.filename.split("/")[-3:])
    return f"{type(inner).__name__} in {last.name}() at {where}:{last.lineno}"


def _torchao_version() -> str:
    from importlib.metadata import version

    return version("torchao")
