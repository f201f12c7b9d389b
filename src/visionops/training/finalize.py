"""After the last epoch: final evaluation, figures, the logged and registered model."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from visionops import names
from visionops.data import Batch, create_eval_loader
from visionops.tracking import RunTracker, plots
from visionops.training.evaluate import EvalResult, evaluate
from visionops.training.job import TrainingJob

_EXAMPLE_IMAGES = 4  # log_model keeps at most this many of its example images


@dataclass
class FinalResult:
    metrics: dict[str, float]
    model_uri: str | None
    registered_version: int | None


def evaluation_metrics(
    result: EvalResult, split: str, classes: Sequence[str], totals: bool = True
) -> dict[str, float]:
    """``<split>/accuracy`` and ``<split>/loss`` (unless not ``totals``), and
    ``<split>/class_accuracy/<class>``."""
    metrics: dict[str, float] = {}
    if totals:
        metrics[names.split_metric(split, "accuracy")] = result.accuracy
        metrics[names.split_metric(split, "loss")] = result.loss
    for name, accuracy in zip(classes, result.per_class_accuracy, strict=True):
        metrics[names.class_accuracy_metric(split, name)] = accuracy
    return metrics


def log_evaluation(
    tracker: RunTracker,
    result: EvalResult,
    split: str,
    classes: Sequence[str],
    step: int,
    totals: bool = True,
) -> None:
    """Metrics, confusion matrix (PNG and JSON) of one evaluation pass; ``totals=False`` leaves
    out accuracy and loss when they are already logged at ``step`` (the last epoch's)."""
    tracker.log_metrics(evaluation_metrics(result, split, classes, totals), step=step)
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
    """Evaluate (val and test, those the data has), log figures, log and register the model.

    A final training (``val_fraction=0``) has no val split: its accuracy is the test split's,
    and without a test split it logs the model unmeasured (``train`` warned at the start).
    """
    cfg, model, data, runtime = job.cfg, job.model, job.data, job.runtime
    model.eval()
    tta = cfg.data.tta
    metrics: dict[str, float] = {}
    if job.val_loader is not None:
        # A run resumed from its last checkpoint has not validated in this process.
        val = last_val or evaluate(
            model, job.val_loader, runtime, data.num_classes, tta=tta, world=job.world
        )
        # The last epoch logged val/accuracy and val/loss at this step (or, for a resumed run,
        # the process before it did): only the per-class figures are new.
        log_evaluation(tracker, val, "val", data.classes, step=cfg.epochs, totals=False)
        metrics = {names.VAL_ACCURACY: val.accuracy, names.VAL_LOSS: val.loss}
    # The test split is not sharded: only the process that logs evaluates it.
    test_loader = None
    if data.test is not None and job.world.is_main:
        test_loader = create_eval_loader(
            data, "test", cfg.data, runtime.device, runtime.memory_format
        )
        test = evaluate(model, test_loader, runtime, data.num_classes, tta=tta)
        log_evaluation(tracker, test, "test", data.classes, step=cfg.epochs)
        metrics[names.split_metric("test", "accuracy")] = test.accuracy
        metrics[names.split_metric("test", "loss")] = test.loss
    if history:
        figure = plots.training_curves(history)
        tracker.log_figure(figure, "training_curves.png")
        plots.close(figure)

    model_uri, version = None, None
    if tracker.run_id is not None and tracker.tracking_uri is not None and cfg.tracking.log_model:
        from visionops.tracking.model_logging import log_model

        example = _example_images(job, test_loader)
        info = log_model(
            model,
            example,
            cfg.tracking.register_as,
            tracker.run_id,
            tracker.tracking_uri,
            classes=data.classes,
            tta=tta,
        )
        model_uri = info.model_uri
        # A local store reports the version as a number, the REST client as a string.
        if info.registered_model_version is not None:
            version = int(info.registered_model_version)
        tracker.set_tags({names.MODEL_URI_TAG: model_uri})
    tracker.flush()
    return FinalResult(metrics, model_uri, version)


def _example_images(job: TrainingJob, test_loader: Iterable[Batch] | None) -> torch.Tensor:
    """Images for the logged model's input example: the first val batch, else (a final
    training) the first test batch, else a few training images."""
    loader = job.val_loader if job.val_loader is not None else test_loader
    if loader is not None:
        return next(iter(loader))[0]
    return job.data.sample_images(_EXAMPLE_IMAGES)
