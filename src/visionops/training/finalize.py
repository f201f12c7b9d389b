"""After the last epoch: final evaluation, figures, the logged and registered model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from visionops.data import create_eval_loader
from visionops.tracking import RunTracker, plots
from visionops.training.evaluate import EvalResult, evaluate
from visionops.training.job import TrainingJob


@dataclass
class FinalResult:
    metrics: dict[str, float]
    model_uri: str | None
    registered_version: int | None


def evaluation_metrics(result: EvalResult, split: str, classes: Sequence[str]) -> dict[str, float]:
    """``<split>/accuracy``, ``<split>/loss`` and ``<split>/class_accuracy/<class>``."""
    metrics = {f"{split}/accuracy": result.accuracy, f"{split}/loss": result.loss}
    for name, accuracy in zip(classes, result.per_class_accuracy, strict=True):
        metrics[f"{split}/class_accuracy/{name}"] = accuracy
    return metrics


def log_evaluation(
    tracker: RunTracker, result: EvalResult, split: str, classes: Sequence[str], step: int
) -> None:
    """Metrics, confusion matrix (PNG and JSON) of one evaluation pass."""
    tracker.log_metrics(evaluation_metrics(result, split, classes), step=step)
    figure = plots.confusion_matrix(result.confusion, classes)
    tracker.log_figure(figure, f"{split}_confusion_matrix.png")
    plots.close(figure)
    tracker.log_dict(
        {"classes": list(classes), "matrix": result.confusion.tolist()},
        f"{split}_confusion_matrix.json",
    )


def finalize_run(
    job: TrainingJob,
    tracker: RunTracker,
    history: Sequence[dict[str, float]],
    last_val: EvalResult | None,
) -> FinalResult:
    """Evaluate (val, and test when there is one), log figures, log and register the model."""
    cfg, model, data, runtime = job.cfg, job.model, job.data, job.runtime
    model.eval()
    # A run resumed from its last checkpoint has not validated in this process.
    tta = cfg.data.tta
    val = last_val or evaluate(
        model, job.val_loader, runtime, data.num_classes, tta=tta, world=job.world
    )
    log_evaluation(tracker, val, "val", data.classes, step=cfg.epochs)
    metrics = {"val_accuracy": val.accuracy, "val_loss": val.loss}
    # The test split is not sharded: only the process that logs evaluates it.
    if data.test is not None and job.world.is_main:
        test_loader = create_eval_loader(
            data, "test", cfg.data, runtime.device, runtime.memory_format
        )
        test = evaluate(model, test_loader, runtime, data.num_classes, tta=tta)
        log_evaluation(tracker, test, "test", data.classes, step=cfg.epochs)
        metrics.update(test_accuracy=test.accuracy, test_loss=test.loss)
    if history:
        figure = plots.training_curves(history)
        tracker.log_figure(figure, "training_curves.png")
        plots.close(figure)

    model_uri, version = None, None
    if tracker.enabled and cfg.tracking.log_model:
        from visionops.tracking.model_logging import log_model

        info = log_model(model, next(iter(job.val_loader))[0], cfg.tracking.register_as)
        model_uri = info.model_uri
        # A local store reports the version as a number, the REST client as a string.
        if info.registered_model_version is not None:
            version = int(info.registered_model_version)
        tracker.set_tags({"visionops.model_uri": model_uri})
    tracker.flush()
    return FinalResult(metrics, model_uri, version)
