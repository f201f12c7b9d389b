"""optimize_model end to end on the tiny model: report files, registered variants, selection."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from optimize_fixtures import SOURCE_NAME, TrainedSource

from visionops import names
from visionops.optimize.options import OptimizeOptions
from visionops.optimize.pipeline import optimize_model
from visionops.optimize.report import REPORT_JSON, REPORT_MD, REPORT_PNG
from visionops.tracking.client import download_model, image_shape, model_metadata


def _options(**values: object) -> OptimizeOptions:
    settings = {
        "methods": ("onnx",),
        "calibration_images": 64,
        "finetune_epochs": 1,
        "latency_runs": 20,
        "throughput_batches": 2,
        **values,
    }
    return OptimizeOptions.model_validate(settings)


def _source_metadata(trained_source: TrainedSource, tmp_path: Path) -> Model:
    folder = download_model(trained_source.model_uri, trained_source.tracking_uri, tmp_path / "m")
    return model_metadata(folder)


def test_onnx_variant_is_measured_reported_and_registered(
    trained_source: TrainedSource, tmp_path: Path
) -> None:
    result = optimize_model(
        trained_source.model_uri,
        _options(methods=("onnx", "tensorrt")),
        tracking_uri=trained_source.tracking_uri,
        output_dir=tmp_path / "out",
    )
    rows = {row.name: row for row in result.report.rows}
    assert list(rows) == ["source", "onnx", "tensorrt"]
    source, onnx_row = rows["source"], rows["onnx"]
    assert source.version == "1" and source.accuracy is not None and source.accuracy > 0.9
    assert onnx_row.accuracy == pytest.approx(source.accuracy, abs=1e-9)
    assert onnx_row.accuracy_delta == pytest.approx(0.0, abs=1e-9)
    assert rows["tensorrt"].skipped and rows["tensorrt"].skipped.startswith("skipped:")
    assert {t.threads for t in onnx_row.timings} == set(_options().threads)

    folder = result.report_path.parent
    for name in (REPORT_JSON, REPORT_MD, REPORT_PNG):
        assert (folder / name).stat().st_size > 0
    saved = json.loads((folder / REPORT_JSON).read_text())
    assert [v["name"] for v in saved["variants"]] == ["source", "onnx", "tensorrt"]
    assert saved["variants"][1]["accuracy"] == onnx_row.accuracy
    assert saved == json.loads(json.dumps(result.report.as_dict()))
    assert "| onnx | onnxruntime | fp32 |" in (folder / REPORT_MD).read_text()

    client = MlflowClient(trained_source.tracking_uri)
    assert onnx_row.version is not None and int(onnx_row.version) > 1
    version = client.get_model_version(SOURCE_NAME, onnx_row.version)
    assert version.tags[names.VARIANT_TAG] == "onnx"
    assert version.tags[names.SOURCE_VERSION_TAG] == "1"
    child = client.get_run(onnx_row.run_id)
    assert child.data.tags[names.PARENT_RUN_TAG] == result.parent_run_id
    assert child.data.metrics[names.VAL_ACCURACY] == onnx_row.accuracy
    parent = client.get_run(result.parent_run_id)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {REPORT_JSON, REPORT_MD, REPORT_PNG} <= artifacts
    assert parent.info.status == "FINISHED"

    # The registered version loads through MLflow and predicts like the source model.
    images = np.random.default_rng(0).random((5, 3, 16, 16), dtype=np.float32)
    local = download_model(onnx_row.model_uri, trained_source.tracking_uri, tmp_path / "dl")
    # Its MLmodel says what the training run's does: classes, TTA, image shape, and its runtime.
    variant, source_info = model_metadata(local), _source_metadata(trained_source, tmp_path)
    for key in (names.CLASSES_METADATA_KEY, names.TTA_METADATA_KEY):
        assert variant.metadata[key] == source_info.metadata[key], key
    assert image_shape(variant) == image_shape(source_info) == (3, 16, 16)
    assert variant.metadata[names.RUNTIME_METADATA_KEY] == "onnxruntime"
    predicted = mlflow.pyfunc.load_model(str(local)).predict(images)
    logits = np.asarray(predicted["logits"] if isinstance(predicted, dict) else predicted)
    source_dir = download_model(
        trained_source.model_uri, trained_source.tracking_uri, tmp_path / "s"
    )
    with torch.no_grad():
        expected = mlflow.pytorch.load_model(str(source_dir))(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_select_for_latency_picks_the_most_accurate_fitting_version(
    trained_source: TrainedSource, tmp_path: Path
) -> None:
    client = MlflowClient(trained_source.tracking_uri)
    budget = 1e6  # every version fits
    result = optimize_model(
        trained_source.model_uri,
        _options(select_for_latency_ms=budget),
        tracking_uri=trained_source.tracking_uri,
        output_dir=tmp_path / "out",
    )
    timed = [r for r in result.report.rows if r.version and r.serving]
    expected = max(timed, key=lambda r: (r.accuracy, -r.serving.latency_ms_p95_b1))
    selected = result.report.selected
    assert selected is not None and selected["version"] == expected.version
    alias = client.get_model_version_by_alias(SOURCE_NAME, names.CANDIDATE_ALIAS)
    assert str(alias.version) == expected.version

    # Nothing fits: the alias stays where it was and the message says why.
    before = client.get_model_version_by_alias(SOURCE_NAME, names.CANDIDATE_ALIAS).version
    none_fit = optimize_model(
        trained_source.model_uri,
        _options(select_for_latency_ms=1e-6),
        tracking_uri=trained_source.tracking_uri,
        output_dir=tmp_path / "out2",
    )
    assert none_fit.report.selected is not None
    assert none_fit.report.selected["version"] is None
    assert "not moved" in none_fit.report.selected["message"]
    assert client.get_model_version_by_alias(SOURCE_NAME, names.CANDIDATE_ALIAS).version == before


def test_promotion_gate_measures_an_onnx_variant(
    trained_source: TrainedSource, tmp_path: Path
) -> None:
    from visionops.registry.policy import PromotionPolicy
    from visionops.registry.promotion import promote

    result = optimize_model(
        trained_source.model_uri,
        _options(),
        tracking_uri=trained_source.tracking_uri,
        output_dir=tmp_path / "out",
    )
    onnx_row = next(r for r in result.report.rows if r.name == "onnx")
    decision = promote(
        SOURCE_NAME,
        onnx_row.version,
        "staging",
        PromotionPolicy(latency_budget_ms=1000.0, latency_runs=5),
        tracking_uri=trained_source.tracking_uri,
    )
    assert decision.decision == "approved", decision.reason
    assert decision.candidate_accuracy == onnx_row.accuracy
    assert decision.latency is not None and decision.latency.p95_ms > 0


def test_a_failing_method_is_a_skipped_row_and_registers_nothing(
    trained_source: TrainedSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import visionops.optimize.methods  # noqa: F401  (registers the built-in methods)
    from visionops.optimize.method import METHODS, OptimizationMethod
    from visionops.optimize.variant import Variant

    def broken(ctx: object) -> list[Variant]:
        raise RuntimeError("the converter crashed\nwith a long traceback")

    def unloadable(ctx: object) -> list[Variant]:  # builds, but no runtime can run it
        return [Variant("unloadable", "unloadable", "onnxruntime", "int8", artifact=tmp_path)]

    for name, build in (("broken", broken), ("unloadable", unloadable)):
        monkeypatch.setitem(METHODS._entries, name, OptimizationMethod(name, name, build))
    client = MlflowClient(trained_source.tracking_uri)
    versions_before = len(client.search_model_versions(f"name='{SOURCE_NAME}'"))

    result = optimize_model(
        trained_source.model_uri,
        _options(methods=("broken", "unloadable", "onnx")),
        tracking_uri=trained_source.tracking_uri,
        output_dir=tmp_path / "out",
    )
    rows = {row.name: row for row in result.report.rows}
    assert rows["broken"].skipped == "skipped: the converter crashed"
    assert rows["unloadable"].skipped and rows["unloadable"].skipped.startswith(
        "skipped: could not run on onnxruntime"
    )
    assert rows["onnx"].version is not None  # the others still ran and registered
    versions = client.search_model_versions(f"name='{SOURCE_NAME}'")
    assert len(versions) == versions_before + 1
    assert {v.tags.get(names.VARIANT_TAG) for v in versions} >= {"onnx"}
    assert not {"broken", "unloadable"} & {v.tags.get(names.VARIANT_TAG) for v in versions}


@pytest.mark.slow
def test_every_method_end_to_end_and_registered_variants_load_through_mlflow(
    trained_source: TrainedSource, tmp_path: Path
) -> None:
    from visionops.data import build_data, split_images
    from visionops.optimize.options import DEFAULT_METHODS
    from visionops.tracking.model_logging import load_pytorch_model

    result = optimize_model(
        trained_source.model_uri,
        _options(methods=DEFAULT_METHODS, prune_ratio=0.5),
        tracking_uri=trained_source.tracking_uri,
        output_dir=tmp_path / "out",
    )
    rows = {row.name: row for row in result.report.rows}
    source = rows["source"]
    built = {
        "onnx", "int8-static", "int8-dynamic", "qat", "prune-structured",
        "prune-unstructured", "openvino-fp32", "openvino-int8",
    }  # fmt: skip
    assert built <= set(rows)
    for name in built:
        row = rows[name]
        assert row.skipped is None, (name, row.skipped)
        # The model learned this data: no variant may lose more than 5 points of it.
        assert row.accuracy is not None and row.accuracy >= source.accuracy - 0.05, name
        assert row.version is not None, (name, row.notes)
    assert rows["tensorrt"].skipped and rows["tensorrt"].skipped.startswith("skipped:")
    assert rows["int8-pt2e"].skipped is None or rows["int8-pt2e"].skipped.startswith("skipped:")
    # Sizes shrink as claimed: INT8 files under a third of FP32 here (small tensors keep their
    # scales and biases in FP32), pruning removes half of the parameters.
    for name in ("int8-static", "qat", "openvino-int8"):
        assert rows[name].size_mb < rows["onnx"].size_mb / 3, name
    assert rows["prune-structured"].params <= 0.5 * source.params
    assert rows["prune-unstructured"].nonzero_params < 0.55 * source.params

    # Each registered version loads through MLflow and scores what the report measured.
    data = build_data(trained_source.config.data, trained_source.config.seed)
    images, labels = split_images(data, "val")
    for name in built:
        row = rows[name]
        local = download_model(row.model_uri, trained_source.tracking_uri, tmp_path / name)
        if row.runtime == "torch":
            with torch.no_grad():
                logits = load_pytorch_model(str(local))(images).numpy()
        else:
            predicted = mlflow.pyfunc.load_model(str(local)).predict(images.numpy())
            logits = np.asarray(predicted["logits"] if isinstance(predicted, dict) else predicted)
        accuracy = float((logits.argmax(1) == labels.numpy()).mean())
        # ONNX Runtime serves the OpenVINO variants' files: INT8 rounding may flip an image.
        tolerance = 1 / len(labels) + 1e-9 if row.runtime == "openvino" else 1e-9
        assert accuracy == pytest.approx(row.accuracy, abs=tolerance), name
