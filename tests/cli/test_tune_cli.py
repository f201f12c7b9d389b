"""``visionops tune`` end to end: a two-trial sweep, its JSON summary, and --resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.cli import EXIT_USER_ERROR, main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_tune_quick_prints_the_best_trial_and_refuses_to_resume_a_finished_sweep(
    tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = tmp_path / "sweeps"
    common = ["--tracking-uri", tracking_uri, "--storage-path", str(storage)]
    flags = ["--preset", "quick", "--num-samples", "2", "--max-epochs", "2", "--name", "s1"]
    flags += ["--search", "random", "--scheduler", "fifo", "--max-concurrent-trials", "1"]
    assert main(["tune", *flags, *common, "--register-as", "tuned", "--json"]) == 0

    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(payload["best_config"]) >= {"lr", "batch_size", "augmentations"}
    assert 0.0 <= payload["best_metric"] <= 1.0
    assert payload["model_uri"].startswith("models:/")
    assert payload["registered_model"] == {"name": "tuned", "version": 1, "alias": "candidate"}
    assert "beats chance (0.1000, 10 classes) by the margin 0.1" in payload["registration"]
    assert [t["status"] for t in payload["trials"]] == ["completed", "completed"]

    assert main(["tune", "--resume", str(storage / "s1")]) == EXIT_USER_ERROR
    assert "already finished" in capsys.readouterr().err


def test_a_storage_uri_is_refused_before_any_work(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--preset", "quick", "--storage-path", "s3://bucket/sweeps"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "'s3://bucket/sweeps' is a URI" in error
    assert "shared file system" in error


def test_a_sweep_whose_best_trial_does_not_beat_chance_registers_nothing(
    tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--preset", "quick", "--num-samples", "1", "--max-epochs", "1", "--name", "s"]
    flags += ["--search", "random", "--scheduler", "fifo", "--register-as", "tuned"]
    flags += ["--tracking-uri", tracking_uri, "--storage-path", str(tmp_path / "sweeps")]
    # No trial of the debug recipe gets 95 points above chance in an epoch.
    assert main(["tune", *flags, "--chance-margin", "0.95", "--json"]) == 0

    captured = capsys.readouterr()
    payload = json.loads(captured.out)  # stdout is the JSON alone, the readable lines on stderr
    (why,) = [line for line in captured.err.splitlines() if line.startswith("not registered:")]
    assert "does not beat chance (0.1000, 10 classes) by the margin 0.95" in why
    assert why.endswith("candidate is unchanged")
    assert payload["registered_model"] is None and payload["not_registered"] in why
    client = MlflowClient(tracking_uri)
    assert client.search_registered_models() == []
    parent = client.get_run(payload["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[names.SWEEP_NOT_REGISTERED_TAG] == payload["not_registered"]


@pytest.mark.parametrize(
    ("flag", "value", "accepted"),
    [
        ("--num-samples", "0", "greater than or equal to 1"),
        ("--max-epochs", "0", "greater than or equal to 1"),
        ("--cpus-per-trial", "0", "greater than 0"),
        ("--gpus-per-trial", "-1", "greater than or equal to 0"),
        ("--max-concurrent-trials", "0", "greater than or equal to 1"),
        ("--max-failures", "-1", "greater than or equal to 0"),
        ("--chance-margin", "1", "less than 1"),
    ],
)
def test_a_numeric_flag_out_of_range_is_refused_before_any_work(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    value: str,
    accepted: str,
) -> None:
    storage = tmp_path / "sweeps"
    argv = ["tune", "--preset", "quick", flag, value, "--name", "s"]
    # A store path not created beforehand (as the tracking_uri fixture does), to see none made.
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv += ["--tracking-uri", tracking_uri, "--storage-path", str(storage)]
    assert main(argv) == EXIT_USER_ERROR

    (error,) = capsys.readouterr().err.strip().splitlines()
    assert error.startswith(f"error: {flag} ") and error.endswith(accepted)
    # Nothing ran: no Ray, no tracking store, no sweep folder.
    assert not ray.is_initialized()
    assert not (tmp_path / "mlflow.db").exists() and not storage.exists()
