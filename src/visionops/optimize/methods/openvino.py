"""``openvino``: the model on OpenVINO's CPU runtime, in FP32 and in INT8 (NNCF post-training
quantisation).

``openvino-fp32`` is the FP32 ONNX export as OpenVINO compiles it. ``openvino-int8`` is that
export quantised by NNCF's ONNX backend (symmetric PERFORMANCE preset, ranges from the calibration
images): again an ONNX file, with QuantizeLinear/DequantizeLinear pairs that OpenVINO folds into
INT8 kernels, so MLflow logs it with its onnx flavour like the others. Should NNCF's ONNX backend
fail on a model, the OpenVINO model (``ov.convert_model``) is quantised instead and saved as IR.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from visionops._quiet import logger_level
from visionops.optimize.export import INPUT_NAME
from visionops.optimize.method import OptimizeContext, register_method
from visionops.optimize.variant import Variant

if TYPE_CHECKING:
    import nncf

logger = logging.getLogger(__name__)

METHOD = "openvino"
#: Execution-graph layer types whose runtime precision says whether the heavy work is INT8.
_COMPUTE_LAYERS = {"Convolution", "FullyConnected", "MatMul", "GroupConvolution", "Deconvolution"}
_INT8 = {"i8", "u8"}


def runtime_precisions(model_path: Path) -> Counter[str]:
    """``layer type:precision`` counts of the compute layers in OpenVINO's CPU execution graph of
    ``model_path`` (an ONNX file or IR) compiled as it is measured, read from the compiled
    model's runtime info."""
    from visionops.inference.onnx_runtimes import openvino_model

    compiled = openvino_model(str(model_path), 1)
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" not in info or "runtimePrecision" not in info:
            continue
        layer = info["layerType"].astype(str)
        if layer in _COMPUTE_LAYERS:
            counts[f"{layer}:{info['runtimePrecision'].astype(str)}"] += 1
    return counts


def execution_note(model_path: Path) -> str:
    """What precision OpenVINO's CPU plugin actually computes the conv/matmul layers in."""
    counts = runtime_precisions(model_path)
    total = sum(counts.values())
    by_precision: Counter[str] = Counter()
    for key, n in counts.items():
        by_precision[key.rsplit(":", 1)[1]] += n
    int8 = sum(n for precision, n in by_precision.items() if precision in _INT8)
    detail = ", ".join(f"{n} {key}" for key, n in sorted(counts.items())) or "none found"
    return (
        f"OpenVINO's CPU execution graph computes {int8} of {total} conv/matmul layers in INT8 "
        f"({detail})"
    )


def calibration_dataset(ctx: OptimizeContext, feed: Callable[[np.ndarray], Any]) -> nncf.Dataset:
    """An ``nncf.Dataset`` of single calibration images, so ``subset_size`` counts images."""
    import nncf

    return nncf.Dataset(ctx.calibration_batches(1), feed)


def _nncf_quantize(model: Any, dataset: nncf.Dataset, subset_size: int) -> Any:
    """NNCF post-training quantisation, symmetric (the PERFORMANCE preset), for the CPU."""
    import nncf

    # NNCF looks for a torch model by importing nncf.torch, which imports
    # torch.utils.cpp_extension, which logs "No CUDA runtime is found" on a machine without
    # CUDA: about NNCF's own torch extensions, which an ONNX or OpenVINO model never uses.
    with _nncf_output_on_stderr(), logger_level("torch.utils.cpp_extension", logging.ERROR):
        return nncf.quantize(
            model,
            dataset,
            preset=nncf.QuantizationPreset.PERFORMANCE,
            target_device=nncf.TargetDevice.CPU,
            subset_size=subset_size,
        )


@contextmanager
def _nncf_output_on_stderr() -> Iterator[None]:
    """NNCF's progress bars and warnings on stderr, its INFO lines off, for the calls inside.

    NNCF draws its progress bars on rich's console, which writes to stdout, and logs to a
    handler of its own on stdout, at INFO: on stdout they would break ``--json``'s one
    document. The bars still show (calibration takes a while), on stderr.
    """
    nncf_logger = logging.getLogger("nncf")
    streams = [h for h in nncf_logger.handlers if type(h) is logging.StreamHandler]
    saved = nncf_logger.level, [(h, h.stream, h.level) for h in streams]
    nncf_logger.setLevel(logging.WARNING)
    for handler in streams:
        handler.setStream(sys.stderr)
        handler.setLevel(logging.WARNING)
    try:
        with redirect_stdout(sys.stderr):  # rich's console finds sys.stdout as it writes
            yield
    finally:
        nncf_logger.setLevel(saved[0])
        for handler, stream, level in saved[1]:
            handler.setStream(stream)
            handler.setLevel(level)


def _quantise_onnx(ctx: OptimizeContext, subset_size: int) -> Path:
    import onnx

    model = onnx.load(str(ctx.fp32_onnx))
    dataset = calibration_dataset(
        ctx, lambda batch: {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}
    )
    quantised = _nncf_quantize(model, dataset, subset_size)
    output = ctx.file("openvino-int8.onnx")
    onnx.save(quantised, str(output))
    return output


def _quantise_ir(ctx: OptimizeContext, subset_size: int) -> Path:
    import openvino as ov

    model = ov.convert_model(str(ctx.fp32_onnx))
    dataset = calibration_dataset(ctx, lambda batch: np.ascontiguousarray(batch, dtype=np.float32))
    quantised = _nncf_quantize(model, dataset, subset_size)
    output = ctx.file("openvino-int8.xml")
    ov.save_model(quantised, str(output))
    return output


def _fp32_note(path: Path) -> str:
    """Which precision the "fp32" row really runs in (the runtime asks OpenVINO for f32: its
    CPU plugin would otherwise compute in bf16 where the CPU has it)."""
    counts = runtime_precisions(path)
    precisions = sorted({key.rsplit(":", 1)[1] for key in counts})
    if precisions and precisions != ["f32"]:
        return (
            f"OpenVINO computes its conv/matmul layers in {'/'.join(precisions)} on this CPU, "
            "not f32"
        )
    return f"OpenVINO computes its conv/matmul layers in {'/'.join(precisions) or 'f32'}"


@register_method(
    METHOD,
    "OpenVINO CPU runtime: FP32, and INT8 by NNCF post-training quantisation (symmetric).",
)
def build(ctx: OptimizeContext) -> list[Variant]:
    fp32 = Variant(
        METHOD,
        "openvino-fp32",
        "openvino",
        "fp32",
        artifact=ctx.fp32_onnx,
        notes=["the FP32 ONNX export compiled by OpenVINO for the CPU", _fp32_note(ctx.fp32_onnx)],
    )
    images = len(ctx.calibration_images)
    notes = [
        f"NNCF post-training INT8 (PERFORMANCE preset: symmetric), calibrated on {images} "
        "training images"
    ]
    try:
        artifact = _quantise_onnx(ctx, images)
        notes.append("quantised by NNCF's ONNX backend: an ONNX file with QDQ nodes")
    except Exception as error:  # the documented fallback, said in the notes
        logger.warning("NNCF's ONNX backend failed (%s); quantising the OpenVINO model", error)
        try:
            artifact = _quantise_ir(ctx, images)
        except Exception as second:
            raise RuntimeError(
                f"NNCF quantisation failed with its ONNX backend ({type(error).__name__}: {error}) "
                f"and on the OpenVINO model ({type(second).__name__}: {second})"
            ) from second
        notes.append(
            f"NNCF's ONNX backend failed ({type(error).__name__}: {error}), so the OpenVINO model "
            "was quantised and saved as IR (.xml/.bin): not registrable as ONNX"
        )
    notes.append(execution_note(artifact))
    int8 = Variant(METHOD, "openvino-int8", "openvino", "int8", artifact=artifact, notes=notes)
    return [fp32, int8]
