"""Parameter importances and parallel coordinates of hand-made sweeps (no Ray), logged to a
SQLite MLflow store, a parent run per test."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from PIL import Image

from visionops.tuning import analysis
from visionops.tuning.results import (
    CURVES_FIGURE,
    IMPORTANCE_FIGURE,
    IMPORTANCES,
    PARALLEL_FIGURE,
    TRIAL_TABLE,
    TrialSummary,
    log_sweep_artifacts,
)

_AUGMENTATIONS = ["random_crop,horizontal_flip", "random_crop,horizontal_flip,cutout"]


def _trial(index: int, val_accuracy: float | None, **config: Any) -> TrialSummary:
    return TrialSummary(
        trial_id=f"trial_{index:05d}",
        run_id=None,
        status="completed",
        epochs=3,
        val_accuracy=val_accuracy,
        config=config,
        curve=[(1, 0.1), (3, val_accuracy or 0.1)],
    )


def _lr_decides(num_trials: int = 12, seed: int = 0) -> list[TrialSummary]:
    """Trials whose accuracy is set by log10(lr); momentum and augmentations are noise."""
    rng = random.Random(seed)
    trials = []
    for index in range(num_trials):
        lr = 10 ** rng.uniform(-4, -1)
        config = {
            "lr": lr,
            "momentum": rng.uniform(0.8, 0.95),
            "augmentations": rng.choice(_AUGMENTATIONS),
            "batch_size": rng.choice([16, 32, 64]),
            "label_smoothing": 0.1,  # fixed in the space: not a parameter of the study
        }
        trials.append(_trial(index, 0.9 + 0.2 * math.log10(lr), **config))
    return trials


@pytest.fixture(scope="module")
def sweeps(
    new_tracking_store: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[MlflowClient, str]:
    """One SQLite store for the module (creating one takes seconds) and its experiment."""
    folder = tmp_path_factory.mktemp("mlflow")
    client = MlflowClient(new_tracking_store(folder, "mlflow.db"))
    return client, client.create_experiment("sweeps", artifact_location=str(folder / "artifacts"))


@pytest.fixture
def parent_run(sweeps: tuple[MlflowClient, str]) -> tuple[MlflowClient, str]:
    client, experiment_id = sweeps
    return client, client.create_run(experiment_id).info.run_id


def _artifacts(client: MlflowClient, run_id: str) -> set[str]:
    return {artifact.path for artifact in client.list_artifacts(run_id)}


def test_the_parameter_that_sets_the_accuracy_is_the_most_important() -> None:
    study = analysis.sweep_study(_lr_decides())
    assert study is not None

    importances = analysis.param_importances(study)

    assert importances is not None
    assert set(importances) == {"lr", "momentum", "augmentations", "batch_size"}
    assert math.isclose(sum(importances.values()), 1.0)
    assert list(importances.values()) == sorted(importances.values(), reverse=True)
    assert next(iter(importances)) == "lr"
    assert importances["lr"] > 2 * max(v for k, v in importances.items() if k != "lr")
    assert analysis.param_importances(study) == importances  # seeded: the same every time


def test_distributions_come_from_the_observed_values() -> None:
    configs: list[dict[str, Any]] = [
        {"lr": 1e-4, "momentum": 0.8, "batch_size": 16, "width": 64, "model": "resnet9"},
        {"lr": np.float64(3e-2), "momentum": 0.95, "batch_size": 64, "width": 1024},
        {"lr": 5e-3, "momentum": 0.9, "batch_size": np.int64(32), "width": 256},
    ]
    for index, config in enumerate(configs):
        config.update(
            augmentations=_AUGMENTATIONS[index % 2],
            amp=index == 1,
            label_smoothing=0.1,
            seed=None if index else 7,
        )

    distributions = analysis.infer_distributions(configs)

    assert distributions == {
        # Positive and spanning a decade or more: log scale.
        "lr": FloatDistribution(1e-4, 3e-2, log=True),
        "width": IntDistribution(64, 1024, log=True),
        "momentum": FloatDistribution(0.8, 0.95),
        "batch_size": IntDistribution(16, 64),
        "augmentations": CategoricalDistribution(_AUGMENTATIONS),
        "amp": CategoricalDistribution([False, True]),
        "seed": CategoricalDistribution([7, None]),
        # label_smoothing took one value and "model" is missing from two trials: left out.
    }


def test_log_scale_and_categorical_parameters_make_a_study_and_figures() -> None:
    trials = _lr_decides(num_trials=6)
    trials[0].config["amp"] = np.bool_(True)
    for trial in trials[1:]:
        trial.config["amp"] = False

    study = analysis.sweep_study(trials)

    assert study is not None
    assert len(study.trials) == 6
    assert study.trials[0].params["amp"] is True
    assert study.trials[0].distributions["lr"] == FloatDistribution(
        min(t.config["lr"] for t in trials), max(t.config["lr"] for t in trials), log=True
    )
    assert study.trials[0].params["augmentations"] in _AUGMENTATIONS
    assert [t.value for t in study.trials] == [t.val_accuracy for t in trials]
    for draw in (analysis.importance_figure, analysis.parallel_coordinates_figure):
        figure = draw(study)
        assert figure.axes and figure.get_size_inches()[0] >= 6.4
        matplotlib.pyplot.close(figure)


def test_the_parent_run_gets_importances_and_both_figures(
    parent_run: tuple[MlflowClient, str], tmp_path: Path
) -> None:
    client, run_id = parent_run
    trials = _lr_decides()
    trials.append(_trial(99, None, lr=0.5, momentum=0.9))  # errored before its first epoch
    style = dict(matplotlib.rcParams)

    log_sweep_artifacts(client, run_id, trials)

    assert _artifacts(client, run_id) == {
        TRIAL_TABLE,
        CURVES_FIGURE,
        IMPORTANCES,
        IMPORTANCE_FIGURE,
        PARALLEL_FIGURE,
    }
    folder = Path(client.download_artifacts(run_id, "", str(tmp_path)))
    logged = json.loads((folder / IMPORTANCES).read_text())
    study = analysis.sweep_study(trials)
    assert study is not None and len(study.trials) == 12  # the trial without a score is left out
    assert logged == analysis.param_importances(study)
    assert list(logged) == sorted(logged, key=logged.__getitem__, reverse=True)
    for name in (IMPORTANCE_FIGURE, PARALLEL_FIGURE):
        with Image.open(folder / name) as image:
            assert image.format == "PNG"
            assert image.width > 300 and image.height > 300
    # Optuna's plots switch matplotlib to the ggplot style; the sweep's process keeps its own.
    assert dict(matplotlib.rcParams) == style


@pytest.mark.parametrize(
    "trials",
    [
        pytest.param([], id="no-trials"),
        pytest.param([_trial(0, 0.4, lr=0.1), _trial(1, None, lr=0.01)], id="one-scored"),
        pytest.param([_trial(0, 0.4, lr=0.1), _trial(1, 0.5, lr=0.1)], id="same-values"),
    ],
)
def test_too_little_to_compare_logs_neither_figure(
    parent_run: tuple[MlflowClient, str], trials: list[TrialSummary]
) -> None:
    client, run_id = parent_run

    log_sweep_artifacts(client, run_id, trials)

    assert _artifacts(client, run_id) == {TRIAL_TABLE, CURVES_FIGURE}


def test_equal_scores_get_parallel_coordinates_but_no_importances(
    parent_run: tuple[MlflowClient, str],
) -> None:
    client, run_id = parent_run
    trials = [_trial(i, 0.1, lr=lr, batch_size=16 * (i + 1)) for i, lr in enumerate([0.1, 0.01])]

    log_sweep_artifacts(client, run_id, trials)

    assert _artifacts(client, run_id) == {TRIAL_TABLE, CURVES_FIGURE, PARALLEL_FIGURE}
