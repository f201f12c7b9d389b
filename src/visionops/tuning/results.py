"""After a sweep: the trial table, the sweep's figures and the registered best model.

Everything here reads Tune's ``ResultGrid`` and writes to MLflow from the driver: the trial
processes have ended by then.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from visionops import names
from visionops.tracking import plots
from visionops.tracking.client import register_model_version
from visionops.tracking.pushgateway import mark_ended, run_labels
from visionops.tuning import analysis

logger = logging.getLogger(__name__)
TRIAL_TABLE = "trials.csv"
CURVES_FIGURE = "validation_curves.png"
IMPORTANCES = "param_importances.json"
IMPORTANCE_FIGURE = "param_importances.png"
PARALLEL_FIGURE = "parallel_coordinates.png"


@dataclass
class TrialSummary:
    trial_id: str
    run_id: str | None
    status: str  # completed, stopped_early or errored
    epochs: int
    val_accuracy: float | None
    config: dict[str, Any]
    curve: list[tuple[int, float]] = field(default_factory=list)
    node_id: str | None = None  # the Ray node of the trial's last report


def summarize_trials(results: Any, max_epochs: int) -> list[TrialSummary]:
    """One summary per trial of a ``ResultGrid``, in trial order."""
    trials = []
    for result in results:
        metrics = result.metrics or {}
        history = result.metrics_dataframe
        curve: list[tuple[int, float]] = []
        if history is not None and names.VAL_ACCURACY in history:
            points = zip(history[names.EPOCH_KEY], history[names.VAL_ACCURACY], strict=True)
            curve = [(int(epoch), float(accuracy)) for epoch, accuracy in points]
        epochs = int(metrics.get(names.EPOCH_KEY, 0))
        if result.error is not None:
            status = "errored"
        elif epochs < max_epochs:
            status = "stopped_early"
        else:
            status = "completed"
        trials.append(
            TrialSummary(
                trial_id=str(metrics.get("trial_id") or Path(result.path).name),
                run_id=metrics.get(names.RUN_ID_KEY),
                status=status,
                epochs=epochs,
                val_accuracy=float(metrics[names.VAL_ACCURACY])
                if names.VAL_ACCURACY in metrics
                else None,
                config=dict(result.config or {}),
                curve=curve,
                node_id=metrics.get(names.NODE_ID_KEY),
            )
        )
    return sorted(trials, key=lambda t: t.trial_id)


def ran_to_end(results: Any, num_samples: int) -> bool:
    """Whether every trial of a ``ResultGrid`` ended (completed, stopped by the scheduler or
    errored) and there are as many as the sweep asked for. Tune returns from a ``fit`` that a
    signal interrupted as from a finished one, with its running trials unfinished and the
    trials it had not yet started missing."""
    ended = results.num_terminated + results.num_errors
    return ended == len(results) and len(results) >= num_samples


def end_running_children(
    client: MlflowClient,
    parent_run_id: str,
    keep: Collection[str] = (),
    tags: Mapping[str, str] | None = None,
    pushgateway: str | None = None,
) -> list[str]:
    """Mark the parent's child runs that are still RUNNING, except ``keep``, as KILLED (with
    ``tags``); returns their ids. Called once ``fit`` has returned, when no trial process is
    left to end its own run: the trials an interrupt stopped (their runs reopen on resume), and
    those a killed driver lost (Tune restores its experiment from a snapshot that can be
    seconds older than they are, and starts their configurations afresh)."""
    experiment = client.get_run(parent_run_id).info.experiment_id
    running = client.search_runs(
        [experiment],
        filter_string=f"tags.`{names.PARENT_RUN_TAG}` = '{parent_run_id}' "
        "and attributes.status = 'RUNNING'",
    )
    ended = [run.info.run_id for run in running if run.info.run_id not in keep]
    for run_id in ended:
        for key, value in (tags or {}).items():
            client.set_tag(run_id, key, value)
        client.set_terminated(run_id, "KILLED")
        if pushgateway is not None:
            mark_ended(pushgateway, run_id, *run_labels(client, run_id))
    return ended


def mark_stopped_trials(client: MlflowClient, results: Any) -> None:
    """KILLED for the runs of an interrupted sweep's trials that had not errored: Tune stops a
    trial by raising inside its ``train()``, which then ends the run as FAILED although
    nothing failed (the resume reopens the run and finishes it)."""
    for result in results:
        run_id = (result.metrics or {}).get(names.RUN_ID_KEY)
        if run_id and result.error is None and client.get_run(run_id).info.status == "FAILED":
            client.set_terminated(run_id, "KILLED")


def chance_accuracy(client: MlflowClient, run_id: str) -> float | None:
    """1 / the number of classes of the run's data (counted from its per-class validation
    accuracies, logged after its last epoch), or None if it logged none."""
    prefix = names.class_accuracy_metric("val", "")
    classes = sum(1 for key in client.get_run(run_id).data.metrics if key.startswith(prefix))
    return 1 / classes if classes else None


def worth_registering(
    client: MlflowClient, best: TrialSummary, margin: float | None
) -> tuple[bool, str]:
    """Whether the best trial's validation accuracy beats chance (1/classes) by ``margin``,
    and one line that says how it compares. ``margin`` None: worth it whatever it scored."""
    accuracy = best.val_accuracy or 0.0
    if margin is None:
        return True, f"{names.VAL_ACCURACY} {accuracy:.4f}; no chance margin was asked for"
    chance = chance_accuracy(client, best.run_id) if best.run_id else None
    if chance is None:
        return False, (
            f"the best trial's run {best.run_id} logged no per-class validation accuracy, so "
            "its accuracy cannot be compared with chance"
        )
    gain = accuracy - chance
    # A hair of slack: 0.2 - 0.1 is 0.09999999999999999 in floating point.
    beats = gain >= margin - 1e-9
    return beats, (
        f"the best trial's {names.VAL_ACCURACY} {accuracy:.4f} "
        f"{'beats' if beats else 'does not beat'} chance ({chance:.4f}, "
        f"{round(1 / chance)} classes) by the margin {margin:g}"
    )


def close_child_runs(
    client: MlflowClient, trials: list[TrialSummary], pushgateway: str | None = None
) -> None:
    """Mark the runs of trials a scheduler stopped as KILLED (Tune ends them mid-run), and
    their groups in ``pushgateway`` as no longer running (see ``--pushgateway``)."""
    for trial in trials:
        if trial.run_id is None or trial.status != "stopped_early":
            continue
        client.set_tag(trial.run_id, names.TRIAL_STOPPED_EARLY_TAG, "true")
        client.set_terminated(trial.run_id, "KILLED")
        if pushgateway is not None:
            mark_ended(pushgateway, trial.run_id, *run_labels(client, trial.run_id))


def best_completed_trial(client: MlflowClient, trials: list[TrialSummary]) -> TrialSummary | None:
    """The completed trial with the highest validation accuracy and a logged model.

    Trials stopped early have no logged model; a scheduler stops them for being behind.
    """
    candidates = [
        t
        for t in trials
        if t.status == "completed" and t.run_id and t.val_accuracy is not None
        if client.get_run(t.run_id).data.tags.get(names.MODEL_URI_TAG)
    ]
    return max(candidates, key=lambda t: t.val_accuracy or 0.0, default=None)


def register_candidate(client: MlflowClient, run_id: str, name: str) -> tuple[str, int]:
    """Register the run's model as a new version of ``name`` with alias ``candidate``."""
    model_uri = client.get_run(run_id).data.tags[names.MODEL_URI_TAG]
    version = register_model_version(model_uri, name, client.tracking_uri)
    client.set_registered_model_alias(name, names.CANDIDATE_ALIAS, version.version)
    return model_uri, int(version.version)


def log_sweep_artifacts(
    client: MlflowClient, parent_run_id: str, trials: list[TrialSummary]
) -> None:
    """The trial table (CSV, one row per trial), the validation curves and, when the trials
    can be compared, the parameter importances and parallel coordinates on the parent run."""
    params = sorted({key for t in trials for key in t.config})
    with tempfile.TemporaryDirectory() as folder:
        table = Path(folder) / TRIAL_TABLE
        with table.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                ["trial_id", "run_id", "node_id", "status", "epochs", names.VAL_ACCURACY, *params]
            )
            for t in trials:
                row = [t.trial_id, t.run_id, t.node_id, t.status, t.epochs, t.val_accuracy]
                writer.writerow(row + [t.config.get(key) for key in params])
        client.log_artifact(parent_run_id, str(table))
    figure = plots.validation_curves({t.trial_id: t.curve for t in trials})
    client.log_figure(parent_run_id, figure, CURVES_FIGURE)
    plots.close(figure)
    _log_search_analysis(client, parent_run_id, trials)


def _log_search_analysis(
    client: MlflowClient, parent_run_id: str, trials: list[TrialSummary]
) -> None:
    """Parallel coordinates, and parameter importances (JSON and figure) unless all trials
    scored the same."""
    try:
        study = analysis.sweep_study(trials)
        if study is None:
            return
        figure = analysis.parallel_coordinates_figure(study)
        client.log_figure(parent_run_id, figure, PARALLEL_FIGURE)
        plots.close(figure)
        importances = analysis.param_importances(study)
        if importances is None:
            return
        client.log_dict(parent_run_id, importances, IMPORTANCES)
        figure = analysis.importance_figure(study)
        client.log_figure(parent_run_id, figure, IMPORTANCE_FIGURE)
        plots.close(figure)
    except Exception:
        # Diagnostics only: losing them must not cost the sweep its registered model.
        logger.warning("could not log the sweep's parameter analysis", exc_info=True)
