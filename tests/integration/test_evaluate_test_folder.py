"""`visionops evaluate --split test` on a folder that holds only ``test/``: a model trained on
one image folder, evaluated on a test set of its own (through the disk cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from banded_images import CLASSES, write_banded_tree

from visionops.cli import main
from visionops.config import TrainConfig, with_fields
from visionops.training import train


@pytest.mark.integration
def test_evaluate_a_test_folder_alone(
    tiny_config: TrainConfig,
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_banded_tree(tmp_path / "labelled" / "train", per_class=8, seed=0)
    test_only = tmp_path / "held-out"
    write_banded_tree(test_only / "test", per_class=3, seed=1)
    cache_dir = tmp_path / "cache"
    cfg = with_fields(
        tiny_config,
        dataset="imagefolder",
        data_dir=str(tmp_path / "labelled"),
        cache_dir=str(cache_dir),
        epochs=1,
        batch_size=8,
    )
    result = train(cfg)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    evaluate = ["evaluate", "--model-uri", result.model_uri, "--dataset", "imagefolder"]
    evaluate += ["--data-dir", str(test_only), "--json"]

    assert main([*evaluate, "--split", "test"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["split"] == "test"
    assert report["num_images"] == 9
    assert len(report["confusion_matrix"]) == 3
    assert sorted(report["per_class_accuracy"]) == list(CLASSES)
    # The run's cache settings came along: the test set was decoded into a cache of its own.
    metas = [json.loads(p.read_text()) for p in cache_dir.glob("*/meta.json")]
    assert {"test": 9} in [meta["splits"] for meta in metas]

    # The folder has no validation split to offer, and nothing to train on.
    assert main([*evaluate, "--split", "val"]) == 2
    assert "no 'val' split; available: test" in capsys.readouterr().err
    train_argv = ["train", "--recipe", "debug", "--dataset", "imagefolder"]
    assert main([*train_argv, "--data-dir", str(test_only)]) == 2
    error = capsys.readouterr().err
    assert "only a test split and no training images" in error
    assert "DATA_DIR/train/<class>/" in error
