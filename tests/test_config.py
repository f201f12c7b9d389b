from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from visionops.cli.commands import train_config
from visionops.cli.parser import build_parser
from visionops.config import (
    CONFIG_FIELDS,
    Override,
    TrainConfig,
    config_differences,
    flatten_config,
    load_config,
    resolve_config,
    save_config,
)
from visionops.errors import ConfigError


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def test_precedence_flag_over_env_over_file_over_recipe_over_default(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(yaml.safe_dump({"optim": {"lr": 0.3, "momentum": 0.8}, "seed": 7}))
    environ = {"VISIONOPS_LR": "0.2", "VISIONOPS_EPOCHS": "6"}

    cfg = train_config(
        _args("--recipe", "quickstart", "--config", str(overrides), "--lr", "0.1"), environ
    )

    assert cfg.optim.lr == 0.1  # flag beats env and file
    assert cfg.epochs == 6  # env beats recipe (quickstart has 4)
    assert cfg.optim.momentum == 0.8  # file beats recipe/default
    assert cfg.seed == 7
    assert cfg.model.name == "resnet9"  # recipe beats default (resnet18)
    assert cfg.data.num_workers == 0  # default


def test_env_values_are_typed(tmp_path: Path) -> None:
    environ = {
        "VISIONOPS_EPOCHS": "10",
        "VISIONOPS_DETERMINISTIC": "true",
        "VISIONOPS_AUGMENTATIONS": "random_crop",
        "VISIONOPS_REGISTER_AS": "none",
        "VISIONOPS_DATA_DIR": str(tmp_path),
    }
    cfg = train_config(_args("--register-as", "clf", "--no-nesterov"), environ)
    assert cfg.epochs == 10 and cfg.deterministic is True
    assert cfg.data.augmentations == ("random_crop",)
    assert cfg.data.data_dir == tmp_path
    assert cfg.tracking.register_as == "clf"
    assert cfg.optim.nesterov is False


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["--epochs", "0"], {}, "epochs=0 (from --epochs)"),
        ([], {"VISIONOPS_EPOCHS": "-3"}, "epochs=-3 (from VISIONOPS_EPOCHS)"),
        (["--lr", "0"], {}, "lr=0"),
        (["--lr=-1e-3"], {}, "lr=-1e-3 (from --lr): Input should be greater than 0"),
        (["--dataset", "mnist"], {}, "'cifar10', 'imagefolder' or 'synthetic'"),
        (
            ["--model", "vgg11"],
            {},
            "registered models: airbench, mobilenet_v3_large, mobilenet_v3_small, resnet18, "
            "resnet9",
        ),
        (
            ["--augmentations", "random_crop,rotate"],
            {},
            "available: alternating_flip, autoaugment, cutmix, cutout, horizontal_flip, mixup",
        ),
        (
            ["--batch-size", "many"],
            {},
            "batch_size=many (from --batch-size): Input should be a valid integer",
        ),
        (
            ["--epochs", "2", "--warmup-epochs", "2"],
            {},
            "warmup_epochs (2.0) must be smaller than epochs (2)",
        ),
        (["--register-as", "m", "--no-log-model"], {}, "register_as needs log_model=true"),
    ],
)
def test_bad_values_name_the_field_and_what_is_accepted(
    argv: list[str], environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        train_config(_args(*argv), environ)
    assert expected in str(caught.value)


def test_unknown_recipe_lists_the_recipes() -> None:
    with pytest.raises(ConfigError, match=r"available recipes: .*debug.*quickstart"):
        train_config(_args("--recipe", "nope"), {})


def test_overrides_file_rejects_unknown_fields(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"optim": {"learning_rate": 0.1}}))
    with pytest.raises(ConfigError, match=r"unknown config field 'optim\.learning_rate'"):
        train_config(_args("--config", str(path)), {})


def test_every_leaf_has_a_unique_flat_name_flag_and_description() -> None:
    flags = {spec.flag for spec in CONFIG_FIELDS.values()}
    assert len(flags) == len(CONFIG_FIELDS)
    assert all(spec.description for spec in CONFIG_FIELDS.values())
    assert {"epochs", "lr", "batch_size", "model", "dataset", "data_dir", "seed", "device"} <= set(
        CONFIG_FIELDS
    )


def test_flattened_params_and_yaml_round_trip(tmp_path: Path) -> None:
    cfg = resolve_config(
        TrainConfig(), [Override("lr", 0.05, "test"), Override("augmentations", "random_crop", "t")]
    )
    params = flatten_config(cfg)
    assert params["optim.lr"] == "0.05"
    assert params["model.name"] == "resnet18"
    assert params["data.augmentations"] == "random_crop"
    assert len(params) == len(CONFIG_FIELDS)

    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_config_differences_ignore_listed_fields() -> None:
    saved = TrainConfig()
    requested = resolve_config(saved, [Override("epochs", 12, "t"), Override("device", "cpu", "t")])
    assert config_differences(saved, requested, ignore=["device"]) == ["epochs: 10 -> 12"]


def test_assignment_is_validated() -> None:
    cfg = TrainConfig()
    with pytest.raises(ValueError):
        cfg.optim.lr = -1.0
