"""benchmarks/time_to_accuracy.py: the epochs and seconds to each target val/accuracy, and a
configuration without a val split refused before it trains."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

from visionops.config import TrainConfig, with_fields
from visionops.recipes import get_recipe

time_to_accuracy = load_benchmark("time_to_accuracy")


def test_a_recipe_without_a_val_split_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def final_training(name: str) -> TrainConfig:
        return with_fields(get_recipe("debug"), val_fraction=0)

    def no_training(cfg: TrainConfig) -> None:
        raise AssertionError("the benchmark trained")

    monkeypatch.setattr(time_to_accuracy, "get_recipe", final_training)
    monkeypatch.setattr(time_to_accuracy, "train", no_training)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its run folder goes there
    monkeypatch.setattr(sys, "argv", ["time_to_accuracy.py", "--recipe", "final"])
    with pytest.raises(SystemExit) as exit_info:
        time_to_accuracy.main()
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "recipe 'final' has val_fraction 0" in error
    assert "times val/accuracy" in error


def test_each_target_is_reported_as_written_with_the_first_epoch_that_reached_it() -> None:
    epochs = [
        {"epoch": 1, "val/accuracy": 0.85, "elapsed_s": 60.0},
        {"epoch": 2, "val/accuracy": 0.912, "elapsed_s": 120.0},
        {"epoch": 3, "val/accuracy": 0.905, "elapsed_s": 180.0},
        {"epoch": 4, "val/accuracy": 0.915, "elapsed_s": 240.0},
    ]
    assert time_to_accuracy.first_reached(epochs, "0.9, 0.915,0.94") == {
        "0.9": {"epochs": 2, "seconds": 120.0},
        "0.915": {"epochs": 4, "seconds": 240.0},
        "0.94": None,
    }
