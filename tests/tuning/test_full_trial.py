"""A full trial runs ``--max-epochs``: a recipe's warm-up, a share of the run, shrinks with it,
and a warm-up set in epochs that does not fit is refused before any work, saying where it came
from and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from visionops.cli import EXIT_USER_ERROR, main
from visionops.config import TrainConfig, warmup_epochs_for
from visionops.errors import VisionOpsError
from visionops.recipes import get_recipe
from visionops.tuning import sweep
from visionops.tuning.presets import get_preset
from visionops.tuning.space import create_search_space


class _Stopped(VisionOpsError):
    """Raised by the stand-in for run_sweep: the test needs the config, not the sweep."""


def test_tune_cifar10_resnet18_fits_its_warmup_into_the_default_max_epochs(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `visionops tune --recipe cifar10-resnet18`: the default preset's --max-epochs 4 is the
    # length of the recipe's 4-epoch warm-up at its own 20 epochs.
    trials: list[TrainConfig] = []

    def build_trial(options: sweep.SweepOptions) -> None:
        trials.append(sweep.full_trial_config(options))
        raise _Stopped("the config is built")

    monkeypatch.setattr(sweep, "run_sweep", build_trial)
    argv = ["tune", "--recipe", "cifar10-resnet18", "--tracking-uri", tracking_uri]
    assert main([*argv, "--storage-path", str(tmp_path / "sweeps")]) == EXIT_USER_ERROR

    [trial] = trials
    assert trial.epochs == get_preset("default").max_epochs == 4
    assert trial.optim.warmup_epochs is None
    assert warmup_epochs_for(trial.optim, trial.epochs) == pytest.approx(0.2 * 4)


@pytest.mark.parametrize("recipe", ["cifar10-fast", "cifar10-resnet18", "cifar10-mobilenetv3"])
def test_every_cifar10_recipe_tunes_at_any_max_epochs(recipe: str) -> None:
    for max_epochs in (1, 2, 4):
        options = sweep.SweepOptions(
            base=get_recipe(recipe),
            space=create_search_space(recipe),
            recipe=recipe,
            max_epochs=max_epochs,
        )
        trial = sweep.full_trial_config(options)
        assert 0 < warmup_epochs_for(trial.optim, trial.epochs) < max_epochs


def test_an_explicit_warmup_longer_than_max_epochs_is_refused_before_any_work(
    tmp_path: Path,
    tracking_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    storage = tmp_path / "sweeps"
    monkeypatch.setenv("VISIONOPS_WARMUP_EPOCHS", "4")
    argv = ["tune", "--recipe", "cifar10-resnet18", "--tracking-uri", tracking_uri]
    assert main([*argv, "--storage-path", str(storage)]) == EXIT_USER_ERROR

    error = capsys.readouterr().err
    assert error.startswith(
        "error: invalid configuration: warmup_epochs=4.0 (from the sweep's base configuration: "
        "recipe 'cifar10-resnet18' and the VISIONOPS_* variables) must be smaller than "
        "epochs=4 (from visionops tune --max-epochs): set warmup_epochs below 4, or to none"
    )
    assert not storage.exists()
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []  # no parent run was created
