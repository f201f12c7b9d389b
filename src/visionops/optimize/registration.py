"""Each measured variant logged as an MLflow model in its own child run and registered as a new
version of the source's registered model, so the promotion gate can move an alias to it.

A variant's child run carries ``val/accuracy`` (what the gate compares) and the report's figures;
its version carries ``visionops.variant``, ``visionops.source_version`` and ``visionops.runtime``
from the moment it is created (tags passed to ``register_model``), so no version exists without
them. A variant whose logging or registration fails keeps its row, with the reason in its notes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib.metadata import version

import numpy as np
import torch

from visionops import names
from visionops.optimize.report import Row
from visionops.optimize.variant import Variant
from visionops.tracking.client import (
    process_tracking_uri,
    register_model_version,
    serving_metadata,
    tracking_client,
)

logger = logging.getLogger(__name__)


def row_metrics(row: Row) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if row.accuracy is not None:
        metrics[names.VAL_ACCURACY] = row.accuracy
    if row.test_accuracy is not None:
        metrics[names.split_metric("test", "accuracy")] = row.test_accuracy
    if row.accuracy_delta is not None:
        metrics[names.VARIANT_ACCURACY_DELTA] = row.accuracy_delta
    for key, value in (
        (names.VARIANT_SIZE_MB, row.size_mb),
        (names.VARIANT_PARAMS, row.params),
        (names.VARIANT_NONZERO_PARAMS, row.nonzero_params),
    ):
        if value is not None:
            metrics[key] = float(value)
    serving, batch = row.serving, row.batch
    if serving:
        metrics[names.VARIANT_LATENCY_P50] = serving.latency_ms_p50_b1
        metrics[names.VARIANT_LATENCY_P95] = serving.latency_ms_p95_b1
        metrics[names.VARIANT_LATENCY_P99] = serving.latency_ms_p99_b1
    if batch:
        metrics[names.VARIANT_THROUGHPUT] = batch.images_per_sec_b64
    for timing in row.timings:  # every thread count, for the UI's comparison view
        for key, value in timing.as_dict().items():
            if key != "threads":
                metrics[f"variant/{timing.threads}_threads/{key}"] = float(value)
    return metrics


def log_and_register(
    variant: Variant,
    row: Row,
    run_id: str,
    example: torch.Tensor,
    registered_name: str,
    source_version: str,
    tracking_uri: str,
    *,
    classes: Sequence[str],
    tta: str,
) -> None:
    """Log ``variant`` to ``run_id`` and register it; fills ``row.model_uri`` and
    ``row.version`` (or a note saying why it is not registered). ``classes`` (in output order)
    and ``tta`` (the source run's test-time augmentation) go into its MLmodel metadata, as
    training writes them, so every version serves the same way."""
    tags = {
        names.VARIANT_TAG: variant.name,
        names.SOURCE_VERSION_TAG: source_version,
        names.RUNTIME_TAG: variant.runtime,
    }
    try:
        logged_uri = _log_model(variant, run_id, example, tracking_uri, classes, tta)
        version = register_model_version(logged_uri, registered_name, tracking_uri, tags)
    except Exception as exc:  # MLflow, export and serialisation errors of every kind
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        row.notes.append(f"not registered: {first}")
        logger.warning("variant %s was measured but not registered: %s", variant.name, first)
        return
    row.version = str(version.version)
    row.model_uri = f"models:/{registered_name}/{row.version}"
    tracking_client(tracking_uri).set_tag(run_id, names.MODEL_URI_TAG, row.model_uri)


def _log_model(
    variant: Variant,
    run_id: str,
    example: torch.Tensor,
    tracking_uri: str,
    classes: Sequence[str],
    tta: str,
) -> str:
    import mlflow
    from mlflow.models import infer_signature

    if variant.artifact is not None and variant.artifact.suffix == ".onnx":
        import onnx

        from visionops.optimize.runtimes import load_predictor

        batch = example[:4].float().contiguous().numpy()
        logits = load_predictor(variant, threads=1)(batch)
        signature = infer_signature(batch, np.asarray(logits))
        experiment_id = tracking_client(tracking_uri).get_run(run_id).info.experiment_id
        with process_tracking_uri(tracking_uri, experiment_id):
            info = mlflow.onnx.log_model(
                onnx.load(str(variant.artifact)),
                name="model",
                signature=signature,
                input_example=batch,
                metadata={
                    names.RUNTIME_METADATA_KEY: variant.runtime,
                    **serving_metadata(classes, tta, batch.shape[1:]),
                },
                run_id=run_id,
                save_as_external_data=False,
                onnx_execution_providers=["CPUExecutionProvider"],
                # Stated, not inferred: inference would import the model in a subprocess.
                pip_requirements=_onnx_requirements(variant.runtime),
            )
        return str(info.model_uri)
    module = variant.loggable_module or variant.module
    if module is None:
        raise ValueError(f"{variant.name} has no file or module MLflow can log")
    from visionops.tracking.model_logging import log_model

    # A PT2E INT8 program loads only where torchao registers its quantised ops.
    extra = (f"torchao=={version('torchao')}",) if variant.loggable_module is not None else ()
    info = log_model(module, example, None, run_id, tracking_uri, extra, classes=classes, tta=tta)
    return str(info.model_uri)


def _onnx_requirements(runtime: str) -> list[str]:
    packages = ["onnx", "openvino" if runtime == "openvino" else "onnxruntime"]
    return [f"{package}=={version(package)}" for package in packages]
