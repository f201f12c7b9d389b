"""The ONNX-file methods: ``int8-static``, ``int8-dynamic`` (ONNX Runtime) and ``openvino``
(OpenVINO, with NNCF), built for the tiny trained model and checked against its FP32 export."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from optimize_fixtures import TrainedSource, make_context

import visionops.optimize.methods  # noqa: F401 - registers the methods
from visionops.data import split_images
from visionops.optimize.export import export_onnx
from visionops.optimize.method import METHODS, OptimizeContext
from visionops.optimize.methods import int8_static, openvino
from visionops.optimize.runtimes import load_predictor
from visionops.optimize.variant import Variant

#: Accuracy an INT8 variant may lose against the FP32 export on the validation split.
ACCURACY_TOLERANCE = 0.03
#: The tiny model's FP32 export is 1.70 MB; static INT8 (QDQ, per-channel) measured 0.47 MB
#: (3.59x smaller) and NNCF's INT8 0.48 MB (3.54x): not 4x, as biases, scales and the graph
#: stay FP32/float and weigh more on a model with small tensors.
MIN_INT8_SHRINK = 3.3


@pytest.fixture(scope="module")
def context(
    trained_source: TrainedSource, tmp_path_factory: pytest.TempPathFactory
) -> OptimizeContext:
    return make_context(trained_source, tmp_path_factory.mktemp("onnx-methods"))


@pytest.fixture(scope="module")
def validation(context: OptimizeContext) -> tuple[np.ndarray, np.ndarray]:
    images, labels = split_images(context.data, "val")
    return images.numpy(), labels.numpy()


def accuracy(variant: Variant, validation: tuple[np.ndarray, np.ndarray]) -> float:
    images, labels = validation
    predict = load_predictor(variant, threads=1)
    logits = np.concatenate([predict(images[i : i + 64]) for i in range(0, len(images), 64)])
    return float((logits.argmax(axis=1) == labels).mean())


@pytest.fixture(scope="module")
def fp32_accuracy(context: OptimizeContext, validation: tuple[np.ndarray, np.ndarray]) -> float:
    return accuracy(
        Variant("onnx", "onnx", "onnxruntime", "fp32", artifact=context.fp32_onnx), validation
    )


def build(name: str, ctx: OptimizeContext) -> list[Variant]:
    return METHODS.get(name).build(ctx)


def only(variants: list[Variant]) -> Variant:
    assert len(variants) == 1, variants
    assert variants[0].skipped is None, variants[0].skipped
    return variants[0]


@pytest.fixture(scope="module")
def static_variant(context: OptimizeContext) -> Variant:
    return only(build("int8-static", context))


def op_types(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def int8_weights(path: Path) -> list[str]:
    """Names of the INT8 tensors (more than one element) stored in the file."""
    model = onnx.load(str(path))
    return [
        t.name
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.INT8 and int(np.prod(t.dims)) > 1
    ]


def scales(path: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {
        t.name: numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.name.endswith("_scale")
    }


def with_options(ctx: OptimizeContext, workdir: Path, **options: object) -> OptimizeContext:
    """``ctx`` with other options and work folder, sharing its FP32 export and calibration images
    (what ``make_context`` would rebuild, at a few seconds each)."""
    other = dataclasses.replace(
        ctx,
        workdir=workdir,
        options=ctx.options.model_validate({**ctx.options.model_dump(), **options}),
    )
    other.__dict__["fp32_onnx"] = ctx.fp32_onnx
    other.__dict__["calibration_images"] = ctx.calibration_images
    return other


def ratio(variant: Variant, ctx: OptimizeContext) -> float:
    size = variant.size_bytes()
    assert size
    return ctx.fp32_onnx.stat().st_size / size


# --- int8-static -----------------------------------------------------------------------------


def test_int8_static_is_a_smaller_qdq_model(
    static_variant: Variant, context: OptimizeContext
) -> None:
    variant = static_variant
    assert (variant.name, variant.runtime, variant.precision) == (
        "int8-static",
        "onnxruntime",
        "int8",
    )
    assert variant.artifact is not None and variant.artifact.exists()
    onnx.checker.check_model(str(variant.artifact))
    ops = op_types(variant.artifact)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0, ops
    weights = int8_weights(variant.artifact)
    assert len(weights) >= 9, weights  # 8 convolutions and the classifier
    assert ratio(variant, context) >= MIN_INT8_SHRINK
    notes = " ".join(variant.notes)
    assert "64 training images" in notes and "minmax" in notes and "reduce_range" in notes


def test_int8_static_keeps_accuracy(
    static_variant: Variant, validation: tuple[np.ndarray, np.ndarray], fp32_accuracy: float
) -> None:
    assert fp32_accuracy > 0.9  # the model learned its data: a drop would show
    assert accuracy(static_variant, validation) >= fp32_accuracy - ACCURACY_TOLERANCE


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_calibration_method_changes_activation_ranges(
    method: str,
    context: OptimizeContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    static_variant: Variant,
    validation: tuple[np.ndarray, np.ndarray],
    fp32_accuracy: float,
) -> None:
    # ORT's KL search is slow Python: a 512-bin histogram keeps the test short (the method uses
    # 1024); ORT's own default (128 bins) would give exactly the min-max ranges.
    monkeypatch.setattr(int8_static, "ENTROPY_BINS", 512)
    ctx = with_options(context, tmp_path, calibration_method=method)
    variant = only(build("int8-static", ctx))
    assert f"with {method} ranges" in " ".join(variant.notes)
    assert static_variant.artifact is not None and variant.artifact is not None
    minmax_scales, other_scales = scales(static_variant.artifact), scales(variant.artifact)
    assert minmax_scales.keys() == other_scales.keys()
    changed = [n for n in minmax_scales if not np.allclose(minmax_scales[n], other_scales[n])]
    assert changed, f"{method} calibration gave the same scales as minmax"
    assert accuracy(variant, validation) >= fp32_accuracy - ACCURACY_TOLERANCE


def test_vnni_detection_reads_cpu_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_vnni = tmp_path / "vnni"
    with_vnni.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    without = tmp_path / "plain"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert int8_static.cpu_has_vnni(with_vnni)
    assert not int8_static.cpu_has_vnni(without)
    assert not int8_static.cpu_has_vnni(tmp_path / "missing")

    monkeypatch.setattr(int8_static.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(int8_static, "cpu_has_vnni", lambda: False)
    reduce_range, note = int8_static.choose_reduce_range()
    assert reduce_range and "reduce_range on" in note
    monkeypatch.setattr(int8_static, "cpu_has_vnni", lambda: True)
    assert int8_static.choose_reduce_range() == (False, "reduce_range off (CPU has VNNI)")


# --- int8-dynamic ----------------------------------------------------------------------------


def test_int8_dynamic_quantises_the_linear_layer_only(
    context: OptimizeContext, validation: tuple[np.ndarray, np.ndarray], fp32_accuracy: float
) -> None:
    variant = only(build("int8-dynamic", context))
    assert (variant.name, variant.runtime) == ("int8-dynamic", "onnxruntime")
    assert variant.artifact is not None and variant.artifact.exists()
    onnx.checker.check_model(str(variant.artifact))
    assert op_types(variant.artifact)["MatMulInteger"] == 1
    assert len(int8_weights(variant.artifact)) == 1  # the classifier; the 8 convolutions stay FP32
    coverage = re.search(
        r"covers Linear layers only: 1 of 9 weight tensors \((\d+\.\d)% of parameters\) quantised",
        " ".join(variant.notes),
    )
    assert coverage, variant.notes
    assert 0 < float(coverage[1]) < 5
    assert accuracy(variant, validation) >= fp32_accuracy - ACCURACY_TOLERANCE


def test_int8_dynamic_skips_a_model_without_linear_layers(
    context: OptimizeContext, tmp_path: Path
) -> None:
    class ConvOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.conv(images)).mean(dim=(2, 3))

    conv_only = ConvOnly().eval()
    ctx = with_options(context, tmp_path)
    ctx.__dict__["fp32_onnx"] = export_onnx(
        conv_only, tmp_path / "fp32.onnx", torch.rand(2, 3, 16, 16), context.options.opset
    )
    [variant] = build("int8-dynamic", ctx)
    assert variant.skipped and "no MatMul/Gemm" in variant.skipped


# --- openvino ----------------------------------------------------------------------------------


def test_openvino_fp32_and_nncf_int8(
    context: OptimizeContext, validation: tuple[np.ndarray, np.ndarray], fp32_accuracy: float
) -> None:
    fp32, int8 = build("openvino", context)
    assert (fp32.name, fp32.runtime, fp32.precision) == ("openvino-fp32", "openvino", "fp32")
    assert fp32.artifact == context.fp32_onnx
    assert accuracy(fp32, validation) >= fp32_accuracy - ACCURACY_TOLERANCE

    assert (int8.name, int8.runtime, int8.precision) == ("openvino-int8", "openvino", "int8")
    assert int8.skipped is None
    assert int8.artifact is not None and int8.artifact.name == "openvino-int8.onnx"
    onnx.checker.check_model(str(int8.artifact))
    ops = op_types(int8.artifact)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0, ops
    assert int8_weights(int8.artifact)  # NNCF stores the quantised weights as INT8
    assert ratio(int8, context) >= MIN_INT8_SHRINK
    executed = re.search(
        r"computes (\d+) of (\d+) conv/matmul layers in INT8", " ".join(int8.notes)
    )
    assert executed and int(executed[1]) > 0, int8.notes
    assert accuracy(int8, validation) >= fp32_accuracy - ACCURACY_TOLERANCE


def test_openvino_int8_falls_back_to_ir_when_nncf_onnx_fails(
    context: OptimizeContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    validation: tuple[np.ndarray, np.ndarray],
    fp32_accuracy: float,
) -> None:
    def broken(ctx: OptimizeContext, subset_size: int) -> Path:
        raise RuntimeError("ONNX backend unavailable")

    monkeypatch.setattr(openvino, "_quantise_onnx", broken)
    _, int8 = build("openvino", with_options(context, tmp_path))
    assert int8.artifact is not None and int8.artifact.suffix == ".xml" and int8.artifact.exists()
    notes = " ".join(int8.notes)
    assert "ONNX backend unavailable" in notes and "not registrable as ONNX" in notes
    assert accuracy(int8, validation) >= fp32_accuracy - ACCURACY_TOLERANCE
