"""The PyTorch-side methods end to end on the tiny trained source: structured and unstructured
pruning, quantisation-aware training and torch-native PT2E INT8."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from torch import nn

import visionops.optimize.methods  # noqa: F401  (every method registers itself)
from visionops import names
from visionops.data import split_images
from visionops.optimize.method import METHODS, OptimizeContext
from visionops.optimize.runtimes import load_predictor
from visionops.optimize.variant import Variant, count_parameters

pytestmark = pytest.mark.slow  # two of them fine-tune the source for an epoch


def _build(ctx: OptimizeContext, method: str) -> Variant:
    variants = METHODS.get(method).build(ctx)
    assert len(variants) == 1 and variants[0].method == method
    return variants[0]


def _accuracy(ctx: OptimizeContext, variant: Variant) -> float:
    images, labels = split_images(ctx.data, "val")
    predict = load_predictor(variant, threads=1)
    logits = np.concatenate(
        [predict(images[i : i + 128].numpy()) for i in range(0, len(images), 128)]
    )
    return float((logits.argmax(1) == labels.numpy()).mean())


def _source_accuracy(ctx: OptimizeContext) -> float:
    return _accuracy(ctx, Variant("source", "source", "torch", "fp32", module=ctx.model))


def _check_finetune_run(ctx: OptimizeContext, run_id: str | None) -> None:
    from mlflow import MlflowClient

    assert run_id is not None
    run = MlflowClient(ctx.tracking_uri).get_run(run_id)
    assert names.TRAIN_LOSS in run.data.metrics
    assert run.data.tags.get(names.PARENT_RUN_TAG) in (None, ctx.parent_run_id)


def _conv_linear_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_structured_pruning_shrinks_and_keeps_the_accuracy(optimize_context) -> None:
    ctx = optimize_context
    variant = _build(ctx, "prune-structured")
    source_params, _ = count_parameters(ctx.model)
    assert variant.runtime == "torch" and variant.precision == "fp32"
    assert variant.params is not None and variant.params <= 0.7 * source_params
    assert variant.params == count_parameters(variant.module)[0]
    assert any("MACs" in note for note in variant.notes)
    assert abs(_accuracy(ctx, variant) - _source_accuracy(ctx)) <= 0.1
    _check_finetune_run(ctx, variant.finetune_run_id)


def test_unstructured_pruning_zeroes_the_ratio_of_weights(optimize_context) -> None:
    ctx = optimize_context
    source_params, source_nonzero = count_parameters(ctx.model)
    variant = _build(ctx, "prune-unstructured")
    weights = _conv_linear_weights(ctx.model)
    assert variant.params == source_params
    expected = source_params - ctx.options.prune_ratio * weights
    assert variant.nonzero_params == pytest.approx(expected, abs=0.005 * weights)
    assert count_parameters(ctx.model)[1] == source_nonzero  # the source was copied, not pruned
    assert any("no speed-up" in note or "same latency" in note for note in variant.notes)
    assert 0.0 <= _accuracy(ctx, variant) <= 1.0  # it runs; no fine-tune, so no accuracy claim


def test_qat_exports_a_smaller_int8_onnx_file(optimize_context) -> None:
    ctx = optimize_context
    variant = _build(ctx, "qat")
    assert variant.runtime == "onnxruntime" and variant.precision == "int8"
    assert variant.artifact is not None
    ops = {node.op_type for node in onnx.load(str(variant.artifact)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert variant.artifact.stat().st_size < ctx.fp32_onnx.stat().st_size
    assert abs(_accuracy(ctx, variant) - _source_accuracy(ctx)) <= 0.05
    _check_finetune_run(ctx, variant.finetune_run_id)


def test_int8_pt2e_compiles_or_says_why_not(optimize_context) -> None:
    ctx = optimize_context
    variant = _build(ctx, "int8-pt2e")
    if variant.skipped is not None:
        assert variant.skipped.startswith("skipped: ")
        assert "Traceback" not in variant.skipped and "\n" not in variant.skipped
        return
    assert variant.runtime == "torch" and variant.precision == "int8"
    assert variant.loggable_module is not None
    assert abs(_accuracy(ctx, variant) - _source_accuracy(ctx)) <= 0.05
