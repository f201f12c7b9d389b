"""``val_fraction=0``: a final training on every training image, measured on the test split.

One run on an image folder with ``train/`` and ``test/`` (written here), checked through what
MLflow recorded, its checkpoints, a resume, and what the commands that read ``val/accuracy``
say about it; and one run on data without a test split, which warns and still logs its model.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pytest
from banded_images import CLASSES, write_banded_tree
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.cli import EXIT_USER_ERROR, main
from visionops.config import TrainConfig, with_fields
from visionops.data import build_data
from visionops.errors import VisionOpsError
from visionops.optimize.export import MIN_PARITY_IMAGES, export_registered
from visionops.optimize.options import OptimizeOptions
from visionops.optimize.source import build_context
from visionops.recipes import get_recipe
from visionops.registry._client import RegistryError
from visionops.registry.promotion import promote
from visionops.tracking.client import download_model, model_classes, model_metadata
from visionops.training import TrainResult, train
from visionops.training import checkpoint as ckpt

pytestmark = pytest.mark.integration

TRAIN_PER_CLASS, TEST_PER_CLASS = 8, 3
NUM_TRAIN, NUM_TEST = 3 * TRAIN_PER_CLASS, 3 * TEST_PER_CLASS
BATCH, EPOCHS = 8, 2
MODEL_NAME = "final"
UNMEASURED = "no accuracy will be measured"


class FinalRun:
    def __init__(self, cfg: TrainConfig, result: TrainResult, checkpoint: dict[str, Any]):
        self.cfg, self.result, self.checkpoint = cfg, result, checkpoint
        self.uri = cfg.tracking.tracking_uri
        assert self.uri is not None
        self.client = MlflowClient(self.uri)


@pytest.fixture(scope="module")
def final_run(
    new_tracking_store: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> FinalRun:
    root = tmp_path_factory.mktemp("final")
    write_banded_tree(root / "images" / "train", TRAIN_PER_CLASS, seed=0)
    write_banded_tree(root / "images" / "test", TEST_PER_CLASS, seed=1)
    cfg = with_fields(
        get_recipe("debug"),
        dataset="imagefolder",
        data_dir=str(root / "images"),
        cache_dir=str(root / "cache"),
        val_fraction=0,
        epochs=EPOCHS,
        batch_size=BATCH,
        deterministic=True,  # so the resume below must reproduce the run exactly
        keep_checkpoints=10,
        register_as=MODEL_NAME,
        tracking_uri=new_tracking_store(root, "mlflow.db"),
        experiment="final-training",
        output_dir=str(root / "outputs"),
    )
    result = train(cfg)
    newest = ckpt.list_checkpoints(result.run_dir)[0]
    return FinalRun(cfg, result, ckpt.load_checkpoint(newest))


def test_it_trains_on_every_training_image(final_run: FinalRun) -> None:
    data = build_data(final_run.cfg.data, final_run.cfg.seed)
    assert data.split_names == ["train", "test"]
    assert data.num_train == NUM_TRAIN  # 10% would have held out 2 of the 24
    # Every image in every epoch: 24 // 8 steps an epoch, not 22 // 8.
    assert final_run.checkpoint["progress"]["step"] == EPOCHS * NUM_TRAIN // BATCH
    assert final_run.result.epochs_completed == EPOCHS


def test_its_accuracy_is_the_test_splits_and_no_val_metric_is_logged(
    final_run: FinalRun,
) -> None:
    result, client = final_run.result, final_run.client
    test_accuracy = names.split_metric("test", "accuracy")
    assert set(result.metrics) == {test_accuracy, names.split_metric("test", "loss")}
    metrics = client.get_run(result.run_id).data.metrics
    assert not [key for key in metrics if key.startswith("val/")]
    assert metrics[test_accuracy] == pytest.approx(result.metrics[test_accuracy])
    assert {names.class_accuracy_metric("test", c) for c in CLASSES} <= set(metrics)
    for key in (names.TRAIN_LOSS, names.TRAIN_ACCURACY, names.EPOCH_SECONDS):
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [1, 2]

    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"training_curves.png", "test_confusion_matrix.png"} <= artifacts
    assert not [path for path in artifacts if path.startswith("val_")]
    confusion = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                f"runs:/{result.run_id}/test_confusion_matrix.json", tracking_uri=final_run.uri
            )
        ).read_text()
    )
    assert confusion["classes"] == list(CLASSES)
    assert sum(map(sum, confusion["matrix"])) == NUM_TEST


def test_the_model_is_logged_and_registered(final_run: FinalRun, tmp_path: Path) -> None:
    result = final_run.result
    assert result.model_uri is not None and result.registered_version == 1
    run = final_run.client.get_run(result.run_id)
    assert run.data.tags[names.MODEL_URI_TAG] == result.model_uri
    info = model_metadata(download_model(result.model_uri, final_run.uri, tmp_path))
    assert model_classes(info) == CLASSES
    assert info.saved_input_example_info is not None  # taken from the test split


def test_such_a_model_is_refused_by_what_reads_val_accuracy(
    final_run: FinalRun,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pinned = f"models:/{MODEL_NAME}/1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", final_run.uri)
    evaluate = ["evaluate", "--model-uri", pinned, "--tracking-uri", final_run.uri, "--json"]
    evaluate.append("--split")
    assert main([*evaluate, "val"]) == EXIT_USER_ERROR
    assert "no 'val' split; available: train, test" in capsys.readouterr().err
    assert main([*evaluate, "test"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["num_images"] == NUM_TEST
    test_accuracy = final_run.result.metrics[names.split_metric("test", "accuracy")]
    assert report["metrics"]["accuracy"] == pytest.approx(test_accuracy)

    with pytest.raises(RegistryError, match=r"no val/accuracy.*val_fraction 0.*--split test"):
        promote(MODEL_NAME, 1, "production", tracking_uri=final_run.uri)
    with pytest.raises(VisionOpsError, match=r"trained with val_fraction 0"):
        build_context(pinned, OptimizeOptions(methods=()), tmp_path, final_run.uri)


def test_it_exports_to_onnx_checked_on_images_it_has(final_run: FinalRun, tmp_path: Path) -> None:
    exported = export_registered(
        f"models:/{MODEL_NAME}/1", tmp_path / "final.onnx", tracking_uri=final_run.uri
    )
    assert exported.parity.passed  # on its 9 test images, repeated flipped up to the minimum
    assert exported.parity.images == MIN_PARITY_IMAGES
    assert exported.path.is_file()


def test_it_resumes_from_its_checkpoint(
    final_run: FinalRun, caplog: pytest.LogCaptureFixture
) -> None:
    first = final_run.result
    last, after_first_epoch = ckpt.list_checkpoints(first.run_dir)[:2]
    last.unlink()  # as if the run had died during its last epoch

    with caplog.at_level(logging.INFO, logger="visionops"):
        resumed = train(final_run.cfg, resume=first.run_dir)

    assert any(str(after_first_epoch) in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if UNMEASURED in r.getMessage()]  # it has a test split
    assert resumed.run_id == first.run_id
    assert resumed.epochs_completed == EPOCHS
    assert resumed.metrics == pytest.approx(first.metrics)  # deterministic: the same run
    assert ckpt.list_checkpoints(first.run_dir)[0].name == last.name
    client = final_run.client
    history = client.get_metric_history(first.run_id, names.TRAIN_ACCURACY)
    assert [m.step for m in history] == [1, 2]  # the epoch the checkpoint held is not re-logged
    assert not [key for key in client.get_run(first.run_id).data.metrics if key.startswith("val/")]
    assert resumed.model_uri is not None and resumed.registered_version == 2


def test_without_a_test_split_it_warns_once_and_still_logs_the_model(
    tiny_config: TrainConfig, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = with_fields(tiny_config, val_fraction=0, epochs=1)  # synthetic: no test split
    with caplog.at_level(logging.WARNING):
        result = train(cfg)

    warnings = [r for r in caplog.records if UNMEASURED in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    message = warnings[0].getMessage()
    assert "'synthetic' has no test split" in message
    assert "data_dir/test/<class>/" in message and "val_fraction > 0" in message
    assert result.metrics == {}
    assert result.model_uri is not None
    client = MlflowClient(cfg.tracking.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.tags[names.MODEL_URI_TAG] == result.model_uri
    assert not [k for k in run.data.metrics if k.startswith(("val/", "test/"))]
    assert [m.step for m in client.get_metric_history(result.run_id, names.TRAIN_ACCURACY)] == [1]
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert "training_curves.png" in artifacts
    assert not [path for path in artifacts if "confusion_matrix" in path]


@pytest.mark.slow
def test_a_job_of_two_processes_trains_on_every_image_and_warns_once(
    tmp_path: Path, tracking_uri: str
) -> None:
    argv = [sys.executable, "-m", "visionops", "train", "--recipe", "debug", "--nproc", "2"]
    argv += ["--val-fraction", "0", "--epochs", "1", "--output-dir", str(tmp_path / "outputs")]
    done = subprocess.run(
        [*argv, "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count(UNMEASURED) == 1  # rank 0 alone says it
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["metrics"] == {} and result["model_uri"]
    # All 400 synthetic images, in global batches of 32 (16 a process).
    newest = ckpt.load_checkpoint(ckpt.list_checkpoints(Path(result["run_dir"]))[0])
    assert newest["progress"]["step"] == 400 // 32
    client = MlflowClient(tracking_uri)
    run = client.get_run(result["run_id"])
    assert run.data.params[names.WORLD_SIZE_PARAM] == "2"
    assert not [k for k in run.data.metrics if k.startswith(("val/", "test/"))]
    assert names.TRAIN_ACCURACY in run.data.metrics
