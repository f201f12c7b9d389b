"""The CIFAR-10 recipes: what they configure, and a short airbench run on generated data."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.config import TrainConfig, warmup_epochs_for, with_fields
from visionops.data.transforms import get_augmentation
from visionops.models import create_model
from visionops.recipes import get_recipe, list_recipes
from visionops.training import train

CIFAR10_RECIPES = {
    "cifar10-fast": "airbench",
    "cifar10-accurate": "airbench",
    "cifar10-resnet18": "resnet18",
    "cifar10-mobilenetv3": "mobilenet_v3_large",
}


def test_the_cifar10_recipes_are_listed() -> None:
    listed = {r.name: r.description for r in list_recipes()}
    assert set(CIFAR10_RECIPES) <= set(listed)
    assert all(listed[name] for name in CIFAR10_RECIPES)


@pytest.mark.parametrize(("name", "model"), sorted(CIFAR10_RECIPES.items()))
def test_cifar10_recipe_is_a_valid_config(name: str, model: str) -> None:
    cfg = get_recipe(name)
    assert isinstance(cfg, TrainConfig)
    assert TrainConfig.model_validate(cfg.model_dump()) == cfg
    assert cfg.data.dataset == "cifar10"
    assert cfg.model.name == model
    assert cfg.data.tta in ("flip", "flip_shift")
    assert warmup_epochs_for(cfg.optim, cfg.epochs) < cfg.epochs
    # Every augmentation of the recipe has an implementation for the loader it will get.
    for name_ in cfg.data.augmentations:
        augmentation = get_augmentation(name_)
        assert augmentation.batched or augmentation.batch_mix


def test_cifar10_fast_is_airbench94() -> None:
    cfg = get_recipe("cifar10-fast")
    assert cfg.model.name == "airbench"
    assert cfg.epochs <= 10
    assert cfg.data.tta == "flip_shift"
    assert "alternating_flip" in cfg.data.augmentations
    assert "random_crop" in cfg.data.augmentations and cfg.data.crop_padding == 2
    assert cfg.data.loader in ("auto", "device")
    optim = cfg.optim
    assert optim.optimizer == "sgd" and optim.nesterov and optim.momentum == 0.85
    assert optim.lr == pytest.approx(1.5)
    assert optim.weight_decay == pytest.approx(0.0153 / 1.5 / (1 + 1 / 0.15))
    assert optim.norm_lr_scale == 64.0 and optim.norm_weight_decay
    assert optim.schedule == "onecycle"
    assert optim.warmup_epochs is None and optim.warmup_fraction == 0.23  # scales with epochs
    assert (optim.lr_start_fraction, optim.lr_end_fraction) == (0.2, 0.07)
    assert optim.label_smoothing == 0.2


def test_cifar10_accurate_is_cifar10_fast_wider_and_longer() -> None:
    fast, accurate = get_recipe("cifar10-fast"), get_recipe("cifar10-accurate")
    assert accurate.epochs > fast.epochs
    assert accurate.model.width_multiplier == 1.75
    net = create_model("airbench", num_classes=10, width_multiplier=accurate.model.width_multiplier)
    widths = [group.conv2.out_channels for group in net.groups]  # type: ignore[union-attr]
    assert widths == [112, 448, 448]
    # A lower lr for the wider net (airbench95: 0.87x), the decay per step (lr x decay) kept.
    assert accurate.optim.lr == pytest.approx(0.9 * fast.optim.lr)
    assert accurate.optim.lr * accurate.optim.weight_decay == pytest.approx(
        fast.optim.lr * fast.optim.weight_decay
    )
    assert warmup_epochs_for(accurate.optim, accurate.epochs) == pytest.approx(0.23 * 15)
    # Everything else is the fast recipe's.
    same = {"epochs", "model", "optim"}
    assert accurate.model_dump(exclude=same) == fast.model_dump(exclude=same)
    unchanged = {"lr", "weight_decay"}
    assert accurate.optim.model_dump(exclude=unchanged) == fast.optim.model_dump(exclude=unchanged)


def test_cifar10_fast_runs_on_synthetic_data(tracking_uri: str, tmp_path: Path) -> None:
    cfg = with_fields(
        get_recipe("cifar10-fast"),
        dataset="synthetic",
        synthetic_size=600,
        batch_size=64,
        eval_batch_size=200,
        epochs=2,
        warmup_epochs=0.5,
        device="cpu",  # the recipe's own bf16 autocast and channels_last, on the CPU
        width_multiplier=0.5,  # half the channels: the same network, twice as fast on CPU
        tracking_uri=tracking_uri,
        experiment="tests",
        output_dir=str(tmp_path / "outputs"),
        log_model=False,
        system_metrics=False,
    )
    result = train(cfg)
    assert result.epochs_completed == 2
    assert result.run_id is not None
    assert 0.0 <= result.metrics[names.VAL_ACCURACY] <= 1.0
    assert result.metrics[names.VAL_LOSS] > 0
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["optim.norm_lr_scale"] == "64.0"
    assert params["optim.norm_weight_decay"] == "True"
    assert params["model.name"] == "airbench"
    assert params["model.width_multiplier"] == "0.5"
    assert params["data.tta"] == "flip_shift"
    assert params["data.augmentations"] == "random_crop,alternating_flip"
    history = client.get_metric_history(result.run_id, names.VAL_ACCURACY)
    assert [m.step for m in history] == [1, 2]
