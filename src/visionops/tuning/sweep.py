"""``run_sweep(options) -> SweepResult``: a Ray Tune hyperparameter search over ``train``.

One MLflow parent run stands for the sweep; every trial is a child run under it, created by
the trial's own process and logged to the same tracking URI. When the trials are done the
parent run gets the trial table and the sweep's figures (validation curves, parallel
coordinates, parameter importances), and the best completed trial's model is registered with
alias ``candidate`` if it beats chance by ``chance_margin``. A sweep that SIGINT or SIGTERM
stops registers nothing and raises ``SweepInterrupted``; ``resume_sweep`` continues it (or one
whose driver was killed) in the same parent run.

    >>> from visionops.recipes import get_recipe
    >>> from visionops.tuning.space import create_search_space
    >>> options = SweepOptions(
    ...     base=get_recipe("debug"), space=create_search_space("debug"), num_samples=4
    ... )
    >>> result = run_sweep(options)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from visionops import env, names
from visionops.config import (
    Override,
    TrainConfig,
    config_to_dict,
    get_field,
    resolve_config,
    split_url_credentials,
    with_run_options,
)
from visionops.distributed.cluster import absolute_tracking_uri, ray_session
from visionops.errors import VisionOpsError
from visionops.tracking.client import tracking_client, uri_for_workers
from visionops.training.checks import check_names
from visionops.tuning import results as sweep_results
from visionops.tuning.algorithms import (
    SchedulerName,
    SearchName,
    create_scheduler,
    create_searcher,
)
from visionops.tuning.interrupt import SweepInterrupted, SweepSignals
from visionops.tuning.presets import DEFAULT_CHANCE_MARGIN
from visionops.tuning.space import SearchSpace, describe_space
from visionops.tuning.trainable import check_measurable, run_trial

logger = logging.getLogger(__name__)

SWEEP_STATE = "visionops-sweep.json"  # in the sweep folder: what resume_sweep needs
DEFAULT_MODEL_NAME = "visionops-tuned"


class TuningError(VisionOpsError):
    """A sweep cannot start, or finished without a usable trial."""


class SweepOptions(BaseModel):
    """A sweep's options; the ranges here are the only check of ``visionops tune``'s numeric
    flags (``config.model_from_flags``), done before Ray starts or any run exists."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not a default

    base: TrainConfig  # every trial starts from it; epochs become max_epochs
    space: SearchSpace
    recipe: str = "custom"  # for the record only
    search: SearchName = "optuna"
    scheduler: SchedulerName = "asha"
    num_samples: int = Field(8, ge=1)
    max_epochs: int = Field(10, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    # default: as many as the resources allow
    max_concurrent_trials: int | None = Field(None, ge=1)
    grace_period: int = Field(1, ge=1)  # ASHA: epochs every trial gets before it can be stopped
    # ASHA/HyperBand: 1/reduction_factor of trials go on per rung
    reduction_factor: int = Field(2, ge=2)
    max_failures: int = Field(2, ge=0)  # restarts of a failing trial, from its last checkpoint
    seed: int | None = 0  # the searcher's, for reproducible suggestions
    points_to_evaluate: list[dict[str, Any]] = Field(default_factory=list)
    address: str | None = None  # an existing Ray cluster; None starts a local one
    num_cpus: int | None = Field(None, ge=1)  # a local Ray's CPUs (default: all)
    storage_path: Path = Path("tune-results")
    name: str | None = None  # the sweep's folder under storage_path (default: sweep-<time>)
    register_as: str | None = None  # default: the base config's register_as, else visionops-tuned
    # The best trial is registered only if its val/accuracy beats chance (1/classes) by this
    # much: a sweep of bad trials must not move `candidate`. None: register it whatever it is.
    chance_margin: float | None = Field(DEFAULT_CHANCE_MARGIN, ge=0, lt=1)


@dataclass
class SweepResult:
    parent_run_id: str
    sweep_dir: Path
    best_config: dict[str, Any] | None
    best_metric: float | None
    best_run_id: str | None
    model_uri: str | None
    registered_model: str | None
    registered_version: int | None  # None: nothing registered (see registration)
    trials: list[sweep_results.TrialSummary]
    registration: str = ""  # how the best trial compares with chance, registered or not


def run_sweep(options: SweepOptions) -> SweepResult:
    """Run a new sweep to the end. Raises TuningError if no trial completes."""
    # Before Ray starts and the parent run exists: every trial would fail the same way.
    check_names(options.base)
    check_measurable(options.base)
    full_trial = full_trial_config(options)  # a warm-up longer than --max-epochs stops here
    name = options.name or time.strftime("sweep-%Y%m%d-%H%M%S")
    sweep_dir = options.storage_path.expanduser().resolve() / name
    # Saved in the state file and every trial's config: credentials go by environment.
    tracking_uri = uri_for_workers(absolute_tracking_uri(options.base))
    client = tracking_client(tracking_uri)
    experiment = options.base.tracking.experiment or _default_experiment()
    parent = client.create_run(
        _experiment_id(client, experiment),
        run_name=name,
        tags={names.SWEEP_TAG: name, names.RECIPE_TAG: options.recipe},
    )
    parent_run_id = parent.info.run_id
    client.log_batch(parent_run_id, params=_sweep_params(options))
    trial_base = with_run_options(
        full_trial,
        tracking_uri=tracking_uri,
        experiment=experiment,
        parent_run_id=parent_run_id,
        # The sweep registers its best model itself; trials only log theirs.
        register_as=None,
        log_model=True,
        # Trial runs go to trial-runs/<trial id>/ (see trainable.run_trial).
        output_dir=str(sweep_dir / "trial-runs"),
    )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    options.points_to_evaluate = _complete_points(
        options.points_to_evaluate, options.space, options.base
    )
    state = {
        "parent_run_id": parent_run_id,
        "tracking_uri": tracking_uri,
        "trial_base": config_to_dict(trial_base),
        "options": _options_record(options, name),
    }
    (sweep_dir / SWEEP_STATE).write_text(json.dumps(state, indent=2, default=str))
    return _fit_and_record(state, sweep_dir, space=options.space)


def full_trial_config(options: SweepOptions) -> TrainConfig:
    """The base config as a full trial runs it: ``max_epochs`` long. A recipe's warm-up is a
    share of the run, so it shrinks with the epochs; a warm-up set in epochs must fit them.

    Raises:
        ConfigError: naming warmup_epochs, where it came from, --max-epochs and the fix.
    """
    return resolve_config(
        options.base,
        [Override("epochs", options.max_epochs, "visionops tune --max-epochs")],
        base_source=f"the sweep's base configuration: recipe {options.recipe!r} and the "
        "VISIONOPS_* variables",
    )


def resume_sweep(sweep_dir: Path, address: str | None = None) -> SweepResult:
    """Continue an interrupted sweep: errored and unfinished trials resume from their
    checkpoints in their MLflow runs, finished trials are not run again."""
    sweep_dir = sweep_dir.expanduser().resolve()
    state_file = sweep_dir / SWEEP_STATE
    if not state_file.is_file():
        raise TuningError(f"{sweep_dir} has no {SWEEP_STATE}; is it a visionops tune folder?")
    state = json.loads(state_file.read_text())
    if _drop_credentials(state):  # a state file written before they were kept out of it
        state_file.write_text(json.dumps(state, indent=2, default=str))
    if address is not None:
        state["options"]["address"] = address
    client = tracking_client(state["tracking_uri"])
    parent = client.get_run(state["parent_run_id"])
    if parent.info.status == "FINISHED":
        raise TuningError(
            f"the sweep in {sweep_dir} already finished (MLflow run {state['parent_run_id']}); "
            "start a new one instead"
        )
    client.update_run(state["parent_run_id"], "RUNNING")
    if names.SWEEP_INTERRUPTED_TAG in parent.data.tags:  # it runs again
        client.delete_tag(state["parent_run_id"], names.SWEEP_INTERRUPTED_TAG)
    return _fit_and_record(state, sweep_dir, space=None)


def _drop_credentials(state: dict[str, Any]) -> bool:
    """Take user info out of the state's tracking URIs (the caller's environment logs in, as
    for any resumed run); True if there was any."""
    tracking = state["trial_base"]["tracking"]
    found = False
    for holder, key in ((state, "tracking_uri"), (tracking, "tracking_uri")):
        if holder.get(key):
            bare = split_url_credentials(holder[key])[0]
            found = found or bare != holder[key]
            holder[key] = bare
    return found


def _fit_and_record(
    state: dict[str, Any], sweep_dir: Path, space: SearchSpace | None
) -> SweepResult:
    """Fit (a new sweep with ``space``, else restore the one in ``sweep_dir``), then record.

    Raises:
        SweepInterrupted: SIGINT or SIGTERM stopped the sweep before its trials ended; the
            parent run is KILLED (tagged with the signal) and nothing is registered.
    """
    options = state["options"]
    parent_run_id = state["parent_run_id"]
    client = tracking_client(state["tracking_uri"])
    pushgateway = state["trial_base"]["tracking"].get("pushgateway")  # older sweeps: none
    signals = SweepSignals()
    status = "FAILED"
    try:
        results = None
        try:
            with ray_session(options.get("address"), options.get("num_cpus")), signals:
                results = _tuner(state, sweep_dir, space).fit()
        except KeyboardInterrupt:
            pass  # a signal outside Tune's handler, or a second Ctrl-C during its last save
        except Exception:
            if signals.received is None:
                raise
            # SIGTERM to the whole process group (Airflow's on_kill) stops Ray's own processes
            # too, and Tune may fail on their way out: still an interrupted sweep.
            logger.warning("Ray Tune failed while %s stopped it", signals.received, exc_info=True)
        if (
            results is None
            or signals.received
            or not sweep_results.ran_to_end(results, options["num_samples"])
        ):
            status = "KILLED"
            # Tune's handler took a SIGINT unseen: a sweep cut short without SIGTERM had one.
            signal_name = signals.received or "SIGINT"
            sweep_results.end_running_children(client, parent_run_id, pushgateway=pushgateway)
            if results is not None:
                sweep_results.mark_stopped_trials(client, results)
            client.set_tag(parent_run_id, names.SWEEP_INTERRUPTED_TAG, signal_name)
            raise SweepInterrupted(
                f"the sweep was interrupted by {signal_name} before its trials ended; nothing "
                f"was registered. Resume it with: visionops tune --resume {sweep_dir}",
                signal_name,
            )
        result = _record(client, state, sweep_dir, results, pushgateway)
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        client.set_terminated(parent_run_id, status)


def _record(
    client: MlflowClient,
    state: dict[str, Any],
    sweep_dir: Path,
    results: Any,
    pushgateway: str | None,
) -> SweepResult:
    """The finished sweep's trial table and figures on its parent run, and its best trial
    registered as ``candidate`` if that beats chance by the sweep's margin."""
    options = state["options"]
    parent_run_id = state["parent_run_id"]
    trials = sweep_results.summarize_trials(results, options["max_epochs"])
    sweep_results.close_child_runs(client, trials, pushgateway)
    sweep_results.end_running_children(
        client,
        parent_run_id,
        keep={t.run_id for t in trials if t.run_id},
        tags={names.TRIAL_ABANDONED_TAG: "true"},
        pushgateway=pushgateway,
    )
    sweep_results.log_sweep_artifacts(client, parent_run_id, trials)
    best = sweep_results.best_completed_trial(client, trials)
    if best is None or best.run_id is None:
        raise TuningError(
            f"no trial of the sweep in {sweep_dir} completed with a logged model; "
            "see the errored trials there"
        )
    model_name = options["register_as"]
    # A state file older than the margin: the default one.
    margin = options.get("chance_margin", DEFAULT_CHANCE_MARGIN)
    worth, registration = sweep_results.worth_registering(client, best, margin)
    version = None
    if worth:
        model_uri, version = sweep_results.register_candidate(client, best.run_id, model_name)
    else:
        model_uri = client.get_run(best.run_id).data.tags[names.MODEL_URI_TAG]
        client.set_tag(parent_run_id, names.SWEEP_NOT_REGISTERED_TAG, registration)
    client.log_metric(parent_run_id, names.BEST_VAL_ACCURACY, best.val_accuracy or 0.0)
    client.log_metric(parent_run_id, "total_epochs", sum(t.epochs for t in trials))
    for key, value in {
        names.BEST_RUN_ID_TAG: best.run_id,
        names.BEST_TRIAL_TAG: best.trial_id,
        names.MODEL_URI_TAG: model_uri,
    }.items():
        client.set_tag(parent_run_id, key, value)
    return SweepResult(
        parent_run_id=parent_run_id,
        sweep_dir=sweep_dir,
        best_config=best.config,
        best_metric=best.val_accuracy,
        best_run_id=best.run_id,
        model_uri=model_uri,
        registered_model=model_name if worth else None,
        registered_version=version,
        trials=trials,
        registration=registration,
    )


def _tuner(state: dict[str, Any], sweep_dir: Path, space: SearchSpace | None) -> Any:
    import ray
    from ray import tune

    options = state["options"]
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base_config=state["trial_base"]),
        {"cpu": options["cpus_per_trial"], "gpu": options["gpus_per_trial"]},
    )
    if space is None:
        # The searcher's state comes back from Tune's snapshot in the sweep folder; ASHA's,
        # which Tune does not keep (ray#30838), from its own file there (persisted_scheduler).
        return tune.Tuner.restore(str(sweep_dir), trainable=trainable, resume_errored=True)

    parallel = _parallel_trials(ray.cluster_resources(), options)
    tune_config = tune.TuneConfig(
        metric=names.VAL_ACCURACY,
        mode="max",
        search_alg=create_searcher(
            options["search"], parallel, options["seed"], options["points_to_evaluate"]
        ),
        scheduler=create_scheduler(
            options["scheduler"],
            options["max_epochs"],
            options["grace_period"],
            options["reduction_factor"],
            sweep_dir,
        ),
        num_samples=options["num_samples"],
        # A trial then starts in the previous trial's worker process instead of a new one
        # that imports torch, MLflow and visionops again: seconds per trial. Every trial asks
        # for the same resources, and train() keeps no state between calls.
        reuse_actors=True,
    )
    run_config = tune.RunConfig(
        name=sweep_dir.name,
        storage_path=str(sweep_dir.parent),
        failure_config=tune.FailureConfig(max_failures=options["max_failures"]),
        # The newest checkpoint is all a restart needs; one more guards a torn upload.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        verbose=1,
    )
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def _parallel_trials(resources: dict[str, float], options: dict[str, Any]) -> int:
    """How many trials fit at once: CPUs (and GPUs) divided by each trial's share."""
    fits = int(resources.get("CPU", 1) // max(options["cpus_per_trial"], 1e-9))
    if options["gpus_per_trial"]:
        fits = min(fits, int(resources.get("GPU", 0) // options["gpus_per_trial"]))
    if fits < 1:
        raise TuningError(
            f"a trial needs {options['cpus_per_trial']} CPUs and {options['gpus_per_trial']} "
            f"GPUs but the Ray cluster has {resources.get('CPU', 0)} and "
            f"{resources.get('GPU', 0)}; lower --cpus-per-trial/--gpus-per-trial"
        )
    limit = options.get("max_concurrent_trials")
    return min(fits, limit) if limit else fits


def _complete_points(
    points: list[dict[str, Any]], space: SearchSpace, base: TrainConfig
) -> list[dict[str, Any]]:
    """Fill each point's unnamed searched fields with the base config's values: searchers
    need every field of the space in every point."""
    completed = []
    for point in points:
        unknown = set(point) - set(space)
        if unknown:
            raise TuningError(
                f"points_to_evaluate names {', '.join(sorted(unknown))}, which the search space "
                f"does not vary; it varies {', '.join(sorted(space))}"
            )
        full = {}
        for name in space:
            value = point[name] if name in point else get_field(base, name)
            full[name] = ",".join(value) if isinstance(value, tuple) else value
        completed.append(full)
    return completed


def _default_experiment() -> str:
    return env.MLFLOW_EXPERIMENT_NAME.get() or env.DEFAULT_EXPERIMENT


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def _options_record(options: SweepOptions, name: str) -> dict[str, Any]:
    """The options as plain JSON (the base config travels separately, as the trial base)."""
    record = {key: getattr(options, key) for key in SweepOptions.model_fields}
    record.pop("base")
    record.pop("space")
    record.update(name=name, storage_path=str(options.storage_path))
    record["register_as"] = (
        options.register_as or options.base.tracking.register_as or DEFAULT_MODEL_NAME
    )
    return record


def _sweep_params(options: SweepOptions) -> list[Any]:
    from mlflow.entities import Param

    values = {
        "recipe": options.recipe,
        "search": options.search,
        "scheduler": options.scheduler,
        "num_samples": options.num_samples,
        "max_epochs": options.max_epochs,
        "cpus_per_trial": options.cpus_per_trial,
        "gpus_per_trial": options.gpus_per_trial,
        "grace_period": options.grace_period,
        "reduction_factor": options.reduction_factor,
        "max_failures": options.max_failures,
        "chance_margin": options.chance_margin,
        **{f"space.{k}": v for k, v in describe_space(options.space).items()},
    }
    return [Param(key, str(value)) for key, value in values.items()]
