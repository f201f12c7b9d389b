"""Evaluate a model logged in MLflow on the split it was validated on (or another one).

The data configuration comes from the model's training run (its ``config.yaml`` artifact),
so ``--split val`` means the same validation images the run held out.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from visionops import env, names
from visionops.config import Override, TrackingConfig, TrainConfig, resolve_config
from visionops.data import build_data, create_eval_loader
from visionops.errors import VisionOpsError
from visionops.tracking import RunTracker
from visionops.tracking.client import (
    download_model,
    model_classes,
    model_metadata,
    run_config,
    run_experiment_name,
    signature_shape,
    tracking_client,
)
from visionops.tracking.model_logging import load_pytorch_model
from visionops.training.evaluate import EvalResult, evaluate
from visionops.training.finalize import evaluation_metrics, log_evaluation
from visionops.training.runtime import resolve_runtime

logger = logging.getLogger(__name__)


@dataclass
class ModelEvaluation:
    model_uri: str
    split: str
    result: EvalResult
    classes: tuple[str, ...]
    source_run_id: str | None
    run_id: str | None  # the MLflow run holding this evaluation

    @property
    def metrics(self) -> dict[str, float]:
        return evaluation_metrics(self.result, self.split, self.classes)


def evaluate_model(
    model_uri: str,
    split: str = "val",
    overrides: list[Override] | None = None,
    tracking_uri: str | None = None,
    log_to_mlflow: bool = True,
    parent_run_id: str | None = None,
) -> ModelEvaluation:
    """Load ``model_uri`` and evaluate it; ``overrides`` may change dataset, data_dir, device.

    ``tracking_uri`` defaults to MLflow's own resolution (``MLFLOW_TRACKING_URI``). The
    evaluation run goes to the experiment of the model's training run, or, nested under
    ``parent_run_id`` (default: ``MLFLOW_RUN_ID``, the project run of ``mlflow run . -e
    evaluate``), to that run's.
    """
    client = tracking_client(tracking_uri)
    try:
        with tempfile.TemporaryDirectory(prefix="visionops-model-") as folder:
            model_dir = download_model(model_uri, client.tracking_uri, Path(folder))
            metadata = model_metadata(model_dir)
            model = load_pytorch_model(str(model_dir))
    except (MlflowException, OSError) as exc:
        raise VisionOpsError(f"cannot load model {model_uri!r}: {exc}") from exc
    source_run_id = metadata.run_id
    base = _training_config(client, source_run_id)
    cfg = resolve_config(
        base,
        [
            *(overrides or []),
            Override("precision", "fp32", "evaluation"),
            Override("channels_last", "off", "evaluation"),
        ],
    )
    runtime = resolve_runtime(cfg)
    data = build_data(cfg.data, cfg.seed, need_train=False)  # a test set may stand alone
    _check_classes(metadata, model_uri, data.num_classes, cfg.data.dataset)
    model = model.to(runtime.device)
    loader = create_eval_loader(data, split, cfg.data, runtime.device)
    result = evaluate(model, loader, runtime, data.num_classes, tta=cfg.data.tta)

    run_id = None
    if log_to_mlflow:
        parent_run_id = parent_run_id or env.MLFLOW_RUN_ID.get()
        tracker = RunTracker(
            TrackingConfig(
                tracking_uri=client.tracking_uri,
                # A nested run goes to its parent's experiment (RunTracker).
                experiment=None if parent_run_id else run_experiment_name(client, source_run_id),
                run_name=f"evaluate-{split}",
                parent_run_id=parent_run_id,
                system_metrics=False,
            )
        )
        run_id = tracker.start(
            params={"model_uri": model_uri, "split": split, "dataset": cfg.data.dataset},
            tags={
                names.EVALUATED_MODEL_URI_TAG: model_uri,
                names.SOURCE_RUN_ID_TAG: source_run_id or "",
            },
        )
        try:
            log_evaluation(tracker, result, split, data.classes, step=0)
        finally:
            tracker.end()
    return ModelEvaluation(model_uri, split, result, data.classes, source_run_id, run_id)


def _check_classes(metadata: Model, model_uri: str, num_classes: int, dataset: str) -> None:
    classes = model_classes(metadata)
    if classes is not None:
        predicted: int | None = len(classes)
    else:  # a model logged before its class names were: its tensor signature's outputs
        shape = signature_shape(metadata, "outputs")
        predicted = shape[-1] if shape else None
    if predicted is not None and predicted != num_classes:
        raise VisionOpsError(
            f"model {model_uri} predicts {predicted} classes but dataset {dataset!r} has "
            f"{num_classes}; evaluate it on data with the classes it was trained on"
        )


def _training_config(client: MlflowClient, run_id: str | None) -> TrainConfig:
    if run_id is None:
        logger.warning("model has no source run; evaluating with the default data configuration")
        return TrainConfig()
    try:
        return run_config(run_id, client.tracking_uri)
    except (MlflowException, OSError):
        logger.warning(
            "run %s has no %s; evaluating with the default data configuration",
            run_id,
            names.RUN_CONFIG_ARTIFACT,
        )
        return TrainConfig()
