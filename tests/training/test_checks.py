"""check_names: registry names and the loader rules, checked before any data is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionops.cli.commands.train import train_config
from visionops.cli.parser import build_parser
from visionops.config import TrainConfig, with_fields
from visionops.errors import ConfigError
from visionops.recipes import list_recipes
from visionops.training import train
from visionops.training.checks import check_names


def _cfg(*argv: str) -> TrainConfig:
    """The config ``visionops train ARGV`` resolves, which the schema alone accepts."""
    return train_config(build_parser().parse_args(["train", *argv]), {})


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--dataset", "mnist"],
            "dataset='mnist': unknown dataset 'mnist'; known: cifar10, imagefolder, synthetic",
        ),
        (
            ["--model", "vgg11"],
            "model='vgg11': unknown model 'vgg11'; known: airbench, mobilenet_v3_large, "
            "mobilenet_v3_small, resnet18, resnet9",
        ),
        (
            ["--augmentations", "random_crop,rotate"],
            "augmentations=('random_crop', 'rotate'): unknown augmentation 'rotate'; known: "
            "alternating_flip, autoaugment, cutmix, cutout, horizontal_flip, mixup, randaugment, "
            "random_crop, trivialaugment",
        ),
        (
            ["--model", "resnet18", "--width-multiplier", "0.5"],
            "width_multiplier=0.5: model 'resnet18' has a fixed width; width_multiplier must be "
            "1.0 (models with a width option: airbench, resnet9)",
        ),
        (
            ["--loader", "device", "--augmentations", "autoaugment"],
            "loader='device': autoaugment run per image on the classic loader only, so they "
            "cannot be combined with loader=device",
        ),
        (
            ["--loader", "device", "--augmentations", "random_crop,trivialaugment"],
            "loader='device': trivialaugment run per image on the classic loader only",
        ),
        (
            ["--loader", "classic", "--augmentations", "alternating_flip"],
            "loader='classic': alternating_flip need loader=device (or auto)",
        ),
        (
            ["--augmentations", "randaugment,alternating_flip"],
            "augmentations=('randaugment', 'alternating_flip'): randaugment run per image on the "
            "classic loader only, so they cannot be combined with alternating_flip",
        ),
        (
            ["--dataset", "imagefolder", "--loader", "device", "--cache", "off"],
            "cache='off': loader=device need the decoded dataset, but cache=off",
        ),
        (
            ["--augmentations", "alternating_flip", "--cache", "off"],
            "cache='off': alternating_flip need the decoded dataset, but cache=off",
        ),
    ],
)
def test_bad_names_and_combinations_name_the_field(argv: list[str], expected: str) -> None:
    cfg = _cfg(*argv)  # the config is a schema: names are not its business
    with pytest.raises(ConfigError) as info:
        check_names(cfg)
    assert str(info.value).startswith("invalid configuration: ")
    assert expected in str(info.value)


@pytest.mark.parametrize(
    "argv",
    [
        # A generated dataset is decoded by construction: the device loader needs no cache.
        ["--dataset", "synthetic", "--loader", "device", "--cache", "off"],
        ["--model", "resnet9", "--width-multiplier", "0.5"],
        ["--augmentations", "autoaugment"],  # auto picks the classic loader
        ["--augmentations", ""],
    ],
)
def test_good_combinations_pass(argv: list[str]) -> None:
    check_names(_cfg(*argv))


@pytest.mark.parametrize("name", [r.name for r in list_recipes()])
def test_every_recipe_passes(name: str) -> None:
    check_names(_cfg("--recipe", name))


def test_train_checks_names_before_reading_any_data(
    tiny_config: TrainConfig, tmp_path: Path
) -> None:
    cfg = with_fields(
        tiny_config, dataset="imagefolder", data_dir=str(tmp_path / "absent"), model="vgg"
    )
    with pytest.raises(ConfigError, match="unknown model 'vgg'"):
        train(cfg)  # not a DataError about the missing folder
    assert not (tmp_path / "outputs").exists()
