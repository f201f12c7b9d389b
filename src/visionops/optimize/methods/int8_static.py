"""``int8-static``: ONNX Runtime static (calibrated) INT8 quantisation, QDQ format, on ONNX Runtime.

The FP32 export goes through ``quant_pre_process`` (shape inference and graph optimisation, as ORT
asks before quantising), then ``quantize_static`` with signed 8-bit activations and weights
(S8S8), per-channel weight scales, and activation ranges calibrated on ``ctx.calibration_images``
with the chosen ``--calibration-method`` (entropy ranges come from ORT's entropy calibrator run
with a finer histogram than ``quantize_static`` gives it, handed over as ORT's calibration cache).
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from visionops.optimize.export import INPUT_NAME
from visionops.optimize.method import OptimizeContext, register_method
from visionops.optimize.variant import Variant

if TYPE_CHECKING:
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

METHOD = "int8-static"
_X86 = {"x86_64", "amd64", "i386", "i686", "x86"}


#: Reductions whose output shape ORT's symbolic shape inference loses when ``axes`` is an input
#: (opset 18 and later; microsoft/onnxruntime PR #32376): the next node then fails with
#: "'NoneType' object is not iterable". ``torch.onnx`` writes global max pooling as ReduceMax.
_SYMBOLIC_SHAPE_BROKEN = {
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMin",
    "ReduceSumSquare",
}


def symbolic_shape_blockers(model_path: Path) -> list[str]:
    """The op types in the model that ORT's symbolic shape inference cannot pass."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 18:
        return []
    return sorted(
        {
            n.op_type
            for n in model.graph.node
            if n.op_type in _SYMBOLIC_SHAPE_BROKEN and len(n.input) > 1
        }
    )


def preprocessed_onnx(ctx: OptimizeContext) -> tuple[Path, str | None]:
    """``ctx.fp32_onnx`` after ORT's quantisation pre-processing (made once per work folder), and
    a note when symbolic shape inference had to be left out."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    path = ctx.file("fp32-preprocessed.onnx")
    blockers = symbolic_shape_blockers(ctx.fp32_onnx)
    note = None
    if blockers:
        # ORT's docs: symbolic shape inference is for transformers; ONNX's own shape inference
        # (still run) covers convolutional nets.
        note = (
            "quantisation pre-processing without ORT's symbolic shape inference, which cannot "
            f"pass {', '.join(blockers)} at opset 18+ (ONNX shape inference used instead)"
        )
    if not path.exists():
        quant_pre_process(str(ctx.fp32_onnx), str(path), skip_symbolic_shape=bool(blockers))
        if not path.exists():
            raise RuntimeError(f"quant_pre_process wrote no model at {path}")
    return path, note


def cpu_has_vnni(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU flags list AVX512-VNNI or AVX-VNNI (False where they cannot be read)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return bool(flags & {"avx512_vnni", "avx_vnni"})
    return False


def choose_reduce_range() -> tuple[bool, str]:
    """(reduce_range, the note saying why): 7-bit weights on x86 CPUs without VNNI, where ORT's
    8-bit kernels can saturate their 16-bit intermediate sums."""
    if platform.machine().lower() not in _X86:
        return False, f"reduce_range off ({platform.machine()} CPU: no x86 saturation issue)"
    if cpu_has_vnni():
        return False, "reduce_range off (CPU has VNNI)"
    return (
        True,
        "reduce_range on: 7-bit weights, as this x86 CPU shows no VNNI "
        "(or its flags are unreadable)",
    )


def calibration_reader(batches: list[np.ndarray]) -> CalibrationDataReader:
    """An ORT ``CalibrationDataReader`` over the calibration batches, fed as ``images``."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._position = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self._position >= len(batches):
                return None
            batch = batches[self._position]
            self._position += 1
            return {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

        def rewind(self) -> None:
            self._position = 0

        def __len__(self) -> int:
            return len(batches)

    return _Reader()


def ort_calibration_method(name: str) -> CalibrationMethod:
    from onnxruntime.quantization import CalibrationMethod

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if name not in methods:
        raise ValueError(f"unknown calibration method {name!r}: expected one of {sorted(methods)}")
    return methods[name]


#: Entropy (KL) calibration histogram. ORT's defaults (128 bins, 128 quantised bins) leave a single
#: candidate threshold, the full range, so "entropy" would give the min-max ranges. The KL method
#: (TensorRT's, which ORT implements) searches windows of a finer histogram: TensorRT uses 2048
#: bins, but ORT's search is pure Python and takes ~28 s on even the tiny test ResNet at 2048
#: (~6 s at 1024, time grows with bins squared and with the number of activation tensors).
ENTROPY_BINS = 1024
ENTROPY_QUANTIZED_BINS = 128


def entropy_ranges(source: Path, batches: list[np.ndarray], cache: Path) -> Path:
    """Activation ranges by ORT's entropy calibrator with a histogram fine enough to choose from,
    written as ORT's calibration cache for ``quantize_static`` to load (``quantize_static`` does
    not pass the histogram sizes on to its calibrator)."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator, save_tensors_data

    with tempfile.TemporaryDirectory(prefix="visionops-calibrate.") as folder:
        calibrator = create_calibrator(
            str(source),
            None,  # every float tensor
            augmented_model_path=str(Path(folder) / "augmented.onnx"),
            calibrate_method=CalibrationMethod.Entropy,
            extra_options={"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_QUANTIZED_BINS},
        )
        calibrator.collect_data(calibration_reader(batches))
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache)
    return cache


@register_method(
    METHOD,
    "Static INT8 (QDQ, S8S8, per-channel), ONNX Runtime quantisation calibrated on training "
    "images; on ONNX Runtime.",
)
def build(ctx: OptimizeContext) -> list[Variant]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    source, preprocess_note = preprocessed_onnx(ctx)
    output = ctx.file("int8-static.onnx")
    reduce_range, range_note = choose_reduce_range()
    method = ctx.options.calibration_method
    batches = ctx.calibration_batches()
    cache = None
    notes = []
    if method == "entropy":
        cache = entropy_ranges(source, batches, ctx.file("int8-static-entropy-ranges.json"))
        notes.append(
            f"entropy: KL threshold search over a {ENTROPY_BINS}-bin histogram "
            "(ORT's default 128 bins would reproduce the min-max ranges)"
        )
    quantize_static(
        str(source),
        str(output),
        calibration_reader(batches),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=ort_calibration_method(method),
        calibration_cache_path=str(cache) if cache else None,
    )
    if not output.exists():
        raise RuntimeError(f"quantize_static wrote no model at {output}")
    images = sum(len(batch) for batch in batches)
    return [
        Variant(
            METHOD,
            METHOD,
            "onnxruntime",
            "int8",
            artifact=output,
            notes=[
                f"static INT8 (QDQ, S8S8, per-channel weights), calibrated on {images} training "
                f"images with {method} ranges",
                range_note,
                *notes,
                *([preprocess_note] if preprocess_note else []),
            ],
        )
    ]
