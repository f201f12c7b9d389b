"""A sweep compares trials by val/accuracy: ``val_fraction=0`` (no val split) is refused, by
``visionops tune`` before Ray or MLflow are touched, and by a trial that sampled it."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from visionops.cli import EXIT_USER_ERROR, main
from visionops.config import TrainConfig, with_fields
from visionops.errors import ConfigError
from visionops.tuning.space import create_search_space
from visionops.tuning.sweep import SweepOptions, run_sweep
from visionops.tuning.trainable import trial_config


def test_tune_refuses_val_fraction_zero_before_any_work(
    tmp_path: Path,
    tracking_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    storage = tmp_path / "sweeps"
    monkeypatch.setenv("VISIONOPS_VAL_FRACTION", "0")  # trials inherit it (see docs/tuning.md)
    argv = ["tune", "--preset", "quick", "--tracking-uri", tracking_uri]
    assert main([*argv, "--storage-path", str(storage)]) == EXIT_USER_ERROR

    error = capsys.readouterr().err
    assert error.startswith("error: invalid configuration: val_fraction=0.0: ")
    assert "compares trials by val/accuracy" in error
    assert "visionops train --val-fraction 0" in error
    assert not storage.exists()
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []  # no parent run was created


def test_run_sweep_refuses_it_too(tiny_config: TrainConfig, tmp_path: Path) -> None:
    options = SweepOptions(
        base=with_fields(tiny_config, val_fraction=0),
        space=create_search_space("debug"),
        storage_path=tmp_path / "sweeps",
    )
    with pytest.raises(ConfigError, match=r"val_fraction=0\.0: a sweep compares trials"):
        run_sweep(options)
    assert not (tmp_path / "sweeps").exists()


def test_a_trial_that_samples_val_fraction_zero_fails_clearly(
    tiny_config: TrainConfig, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"val_fraction=0\.0: a sweep compares trials"):
        trial_config(tiny_config, {"val_fraction": 0.0}, "trial-0", tmp_path)
    cfg = trial_config(tiny_config, {"val_fraction": 0.2}, "trial-1", tmp_path)
    assert cfg.data.val_fraction == 0.2
