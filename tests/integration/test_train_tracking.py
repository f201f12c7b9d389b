"""A real training run on synthetic data, checked through what MLflow recorded."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.config import CONFIG_FIELDS, TrainConfig
from visionops.data import build_data
from visionops.models import ImageClassifier, create_model
from visionops.tracking.client import (
    download_model,
    image_shape,
    model_classes,
    model_metadata,
    model_tta,
)
from visionops.training import checkpoint as ckpt
from visionops.training import train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(
    new_tracking_store: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainConfig, object, Path]:
    root = tmp_path_factory.mktemp("train")
    mlflow.set_system_metrics_sampling_interval(1)
    cfg = TrainConfig(
        epochs=3,
        data={
            "dataset": "synthetic",
            "synthetic_size": 3000,
            # The textures read the same at any size: a quarter of the pixels, of the time.
            "image_size": 16,
            "batch_size": 64,
            "eval_batch_size": 300,
        },
        model={"name": "resnet9", "width_multiplier": 0.5},
        # Values other than the defaults, so the params check below sees the ones given.
        optim={"lr": 0.05, "warmup_epochs": 1, "label_smoothing": 0.1},
        tracking={
            "tracking_uri": new_tracking_store(root, "mlflow.db"),
            "experiment": "integration",
            "register_as": "tiny-classifier",
            "log_every_n_steps": 5,
        },
        checkpoint={"output_dir": str(root / "outputs")},
    )
    try:
        result = train(cfg)
    finally:
        mlflow.set_system_metrics_sampling_interval(None)
    return cfg, result, root


def test_the_model_learns(trained) -> None:
    _, result, _ = trained
    assert result.metrics[names.VAL_ACCURACY] > 0.5  # chance is 0.1
    assert result.epochs_completed == 3


def test_params_tags_and_status(trained) -> None:
    cfg, result, _ = trained
    run = MlflowClient(cfg.tracking.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    # Every config field, and what the config implies for the job (one process here).
    assert len(run.data.params) == len(CONFIG_FIELDS) + 5
    assert run.data.params[names.WORLD_SIZE_PARAM] == "1"
    assert run.data.params[names.GLOBAL_BATCH_PARAM] == "64"
    assert run.data.params[names.EFFECTIVE_LR_PARAM] == "0.05"
    assert run.data.params[names.EFFECTIVE_WARMUP_PARAM] == "1.0"
    assert run.data.params[names.EFFECTIVE_COMPILE_PARAM] == "off"  # auto, on CPU
    assert run.data.params["model.name"] == "resnet9"
    assert run.data.params["optim.lr"] == "0.05"
    assert run.data.params["data.dataset"] == "synthetic"
    tags = run.data.tags
    assert tags["torch.version"] == torch.__version__
    assert tags["visionops.version"] and tags["hostname"] and tags["device"].startswith("cpu")
    assert (
        MlflowClient(cfg.tracking.tracking_uri).get_experiment(run.info.experiment_id).name
        == "integration"
    )


def test_per_batch_and_per_epoch_metrics(trained) -> None:
    cfg, result, _ = trained
    client = MlflowClient(cfg.tracking.tracking_uri)
    steps_per_epoch = 2700 // 64
    total_steps = 3 * steps_per_epoch
    loss = client.get_metric_history(result.run_id, names.STEP_LOSS)
    expected_steps = sorted(
        {s for s in range(1, total_steps + 1) if s % 5 == 0}
        | {steps_per_epoch * e for e in (1, 2, 3)}
    )
    assert sorted(m.step for m in loss) == expected_steps
    assert len(client.get_metric_history(result.run_id, names.LEARNING_RATE)) == len(expected_steps)
    assert all(m.value > 0 for m in client.get_metric_history(result.run_id, names.IMAGES_PER_SEC))

    val_acc = client.get_metric_history(result.run_id, names.VAL_ACCURACY)
    assert [m.step for m in val_acc] == [1, 2, 3]
    assert val_acc[-1].value == pytest.approx(result.metrics[names.VAL_ACCURACY])
    for key in (
        names.TRAIN_LOSS,
        names.TRAIN_ACCURACY,
        names.VAL_LOSS,
        names.EPOCH_SECONDS,
    ):
        assert len(client.get_metric_history(result.run_id, key)) == 3
    run = client.get_run(result.run_id)
    assert len(run.data.metrics) > 0
    assert any(key.startswith("system/") for key in run.data.metrics), (
        "system metrics were not logged"
    )
    assert names.class_accuracy_metric("val", "horizontal_1px") in run.data.metrics


def test_artifacts(trained) -> None:
    cfg, result, _ = trained
    names = {a.path for a in MlflowClient(cfg.tracking.tracking_uri).list_artifacts(result.run_id)}
    assert {
        "config.yaml",
        "training_curves.png",
        "val_confusion_matrix.png",
        "val_confusion_matrix.json",
    } <= names
    config_yaml = result.run_dir / "config.yaml"
    assert config_yaml.is_file()
    assert ckpt.list_checkpoints(result.run_dir), "no checkpoint next to config.yaml"
    local = mlflow.artifacts.download_artifacts(
        f"runs:/{result.run_id}/val_confusion_matrix.json", tracking_uri=cfg.tracking.tracking_uri
    )
    confusion = json.loads(Path(local).read_text())
    assert sum(map(sum, confusion["matrix"])) == 300


def test_logged_model_predicts_like_the_trained_one(trained, tmp_path: Path) -> None:
    cfg, result, _ = trained
    data = build_data(cfg.data, cfg.seed)
    _, state = ckpt.load_newest_valid(result.run_dir)
    in_memory = ImageClassifier(
        create_model("resnet9", 10, width_multiplier=0.5), data.mean, data.std
    )
    in_memory.load_state_dict(state["model"])
    in_memory.eval()

    model_dir = download_model(result.model_uri, cfg.tracking.tracking_uri, tmp_path)
    loaded = mlflow.pytorch.load_model(str(model_dir))
    images = torch.rand(6, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), in_memory(images), rtol=1e-5, atol=1e-5)

    # The image shape and classes are in the metadata; the signature is the image pyfunc's,
    # a string column of base64 images (what mlflow models serve enforces).
    info = model_metadata(model_dir)
    assert image_shape(info) == (3, 16, 16)
    assert info.metadata[names.INPUT_SHAPE_METADATA_KEY] == [3, 16, 16]
    assert model_classes(info) == tuple(data.classes)
    assert model_tta(info) == cfg.data.tta
    assert info.signature.inputs.to_dict() == [
        {"type": "string", "name": names.PYFUNC_IMAGE_COLUMN, "required": True}
    ]
    assert info.saved_input_example_info is not None
    version = MlflowClient(cfg.tracking.tracking_uri).get_model_version(
        "tiny-classifier", str(result.registered_version)
    )
    assert version.run_id == result.run_id
