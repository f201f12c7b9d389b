"""``visionops tune`` end to end: a two-trial sweep, its JSON summary, and --resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
