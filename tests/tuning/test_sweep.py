"""Tiny Ray Tune sweeps on generated data, tracked in a per-test SQLite store.

Each sweep runs its trials one at a time (``max_concurrent_trials=1``) so the order in which
they reach ASHA's rungs, and therefore which are stopped, does not depend on timing.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from ray import tune

from visionops import names
from visionops.config import TrainConfig, with_fields
from visionops.tracking.client import process_tracking_uri
from visionops.training import train
from visionops.tuning.algorithms import SEARCH_NAMES, SearchName
from visionops.tuning.results import (
    CURVES_FIGURE,
    IMPORTANCE_FIGURE,
    IMPORTANCES,
    PARALLEL_FIGURE,
    TRIAL_TABLE,
)
from visionops.tuning.space import create_search_space
from visionops.tuning.sweep import SweepOptions, run_sweep

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The debug model barely learns in one epoch, so a trial's first validation accuracy is set by
# its initial weights, i.e. its seed: with a near-zero rate and a constant schedule it is
# exactly what a one-epoch run with that seed measures.
_FROZEN_LR = 1e-6


def _first_epoch_accuracy(base: TrainConfig, seed: int) -> float:
    cfg = with_fields(base, seed=seed, epochs=1, lr=_FROZEN_LR, log_model=False)
    return train(cfg).metrics[names.VAL_ACCURACY]


@pytest.fixture
def frozen_base(tiny_config: TrainConfig) -> TrainConfig:
    return with_fields(tiny_config, schedule="constant")


@pytest.fixture
def ranked_seeds(frozen_base: TrainConfig) -> tuple[int, int]:
    """Two seeds whose frozen trials score differently after one epoch: (better, worse)."""
    first = _first_epoch_accuracy(frozen_base, 0)
    for seed in range(1, 10):
        other = _first_epoch_accuracy(frozen_base, seed)
        if other != first:
            return (0, seed) if first > other else (seed, 0)
    raise AssertionError("ten seeds gave the same accuracy; the debug recipe changed")


def _options(tmp_path: Path, base: TrainConfig, **fields: object) -> SweepOptions:
    defaults: dict[str, object] = {
        "base": base,
        "recipe": "debug",
        "space": {"lr": create_search_space("debug")["lr"]},
        "num_samples": 2,
        "max_epochs": 2,
        "max_concurrent_trials": 1,
        "num_cpus": 2,
        "storage_path": tmp_path / "tune-results",
        "name": "sweep",
        "register_as": "tuned",
        # Frozen trials score near chance: these tests are about the search, not the gate
        # (tests/cli/test_tune_cli.py has a sweep that does not beat chance).
        "chance_margin": None,
    }
    return SweepOptions(**{**defaults, **fields})  # type: ignore[arg-type]


def _child_runs(client: MlflowClient, parent_run_id: str) -> list[mlflow.entities.Run]:
    experiment = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )


def test_asha_optuna_sweep_nests_runs_stops_trials_and_registers_the_best(
    tmp_path: Path, frozen_base: TrainConfig, ranked_seeds: tuple[int, int], tracking_uri: str
) -> None:
    better, worse = ranked_seeds
    space = {
        **create_search_space("debug"),
        "seed": tune.choice([better, worse]),
        "lr": tune.loguniform(_FROZEN_LR, 0.3),  # the frozen points must lie in the space
    }
    # The second trial reaches the first rung behind the first one, so ASHA stops it
    # (and the third, its twin, falls below the median of the first two).
    frozen = [{"seed": seed, "lr": _FROZEN_LR} for seed in (better, worse, worse)]
    options = _options(
        tmp_path,
        frozen_base,
        space=space,
        num_samples=4,
        max_epochs=3,
        grace_period=1,
        reduction_factor=2,
        points_to_evaluate=frozen,
    )
    result = run_sweep(options)

    client = MlflowClient(tracking_uri)
    parents = client.search_runs(
        [client.get_run(result.parent_run_id).info.experiment_id],
        filter_string="tags.visionops.sweep = 'sweep'",
    )
    assert [run.info.run_id for run in parents] == [result.parent_run_id]
    children = {run.info.run_id: run for run in _child_runs(client, result.parent_run_id)}
    assert len(children) == len(result.trials) == 4
    for trial in result.trials:
        params = children[trial.run_id].data.params
        for field, value in trial.config.items():
            assert params[_param_name(field)] == str(value)

    stopped = [t for t in result.trials if t.status == "stopped_early"]
    assert stopped and all(t.epochs < 3 for t in stopped)
    assert all(children[t.run_id].info.status == "KILLED" for t in stopped)

    completed = [t for t in result.trials if t.status == "completed"]
    assert result.best_metric == max(t.val_accuracy or 0 for t in completed)
    with process_tracking_uri(tracking_uri):  # as a user's own MLflow setting would
        model = mlflow.pytorch.load_model(f"models:/tuned@{names.CANDIDATE_ALIAS}")
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)

    artifacts = Path(
        mlflow.artifacts.download_artifacts(run_id=result.parent_run_id, tracking_uri=tracking_uri)
    )
    rows = list(csv.DictReader((artifacts / TRIAL_TABLE).open()))
    assert sorted(row["run_id"] for row in rows) == sorted(children)
    assert (artifacts / CURVES_FIGURE).is_file()
    importances = json.loads((artifacts / IMPORTANCES).read_text())
    assert "seed" in importances and set(importances) <= set(space)
    assert math.isclose(sum(importances.values()), 1.0)
    assert (artifacts / IMPORTANCE_FIGURE).is_file() and (artifacts / PARALLEL_FIGURE).is_file()


@pytest.mark.parametrize("search", [s for s in SEARCH_NAMES if s != "optuna"])
def test_each_search_algorithm_runs_a_tiny_sweep(
    tmp_path: Path, tiny_config: TrainConfig, tracking_uri: str, search: SearchName
) -> None:
    result = run_sweep(_options(tmp_path, tiny_config, search=search, scheduler="fifo"))

    assert [t.status for t in result.trials] == ["completed", "completed"]
    children = _child_runs(MlflowClient(tracking_uri), result.parent_run_id)
    assert len(children) == 2
    assert result.model_uri is not None and result.registered_version == 1


def _param_name(field: str) -> str:
    from visionops.config import CONFIG_FIELDS

    return ".".join(CONFIG_FIELDS[field].path)


def test_a_failing_trial_is_marked_errored_without_ending_the_sweep(
    tmp_path: Path, tiny_config: TrainConfig
) -> None:
    options = _options(
        tmp_path,
        tiny_config,
        search="random",
        scheduler="fifo",
        max_epochs=1,
        max_failures=1,
        space={"lr": tune.choice([0.05, -1.0])},
        points_to_evaluate=[{"lr": 0.05}, {"lr": -1.0}],  # a negative rate fails validation
    )
    result = run_sweep(options)

    assert [t.status for t in result.trials] == ["completed", "errored"]
    assert result.best_config == {"lr": 0.05}
