from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from visionops.cli.commands.train import train_config
from visionops.cli.parser import build_parser
from visionops.config import (
    CONFIG_FIELDS,
    RUN_OPTIONS,
    Override,
    TrainConfig,
    config_differences,
    flatten_config,
    load_config,
    resolve_config,
    save_config,
    warmup_epochs_for,
    with_fields,
    with_run_options,
)
from visionops.errors import ConfigError
from visionops.recipes import get_recipe


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
        (
            ["--batch-size", "many"],
            {},
            "batch_size=many (from --batch-size): Input should be a valid integer",
        ),
        (
            ["--epochs", "2", "--warmup-epochs", "2"],
            {},
            "warmup_epochs=2.0 (from --warmup-epochs) must be smaller than epochs=2 (from "
            "--epochs): set warmup_epochs below 2, or to none for a warm-up that scales",
        ),
        (["--register-as", "m", "--no-log-model"], {}, "register_as needs log_model=true"),
        (
            ["--val-fraction=-0.1"],
            {},
            "val_fraction=-0.1 (from --val-fraction): Input should be greater than or equal to 0",
        ),
        (
            [],
            {"VISIONOPS_VAL_FRACTION": "1"},
            "val_fraction=1 (from VISIONOPS_VAL_FRACTION): Input should be less than 1",
        ),
    ],
)
def test_bad_values_name_the_field_and_what_is_accepted(
    argv: list[str], environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        train_config(_args(*argv), environ)
    assert expected in str(caught.value)


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("0.0", 0.0), ("0.25", 0.25)])
def test_val_fraction_zero_is_accepted(value: str, expected: float) -> None:
    # 0: a final training on every training image (see docs/training.md).
    assert train_config(_args("--val-fraction", value), {}).data.val_fraction == expected
    assert TrainConfig(data={"val_fraction": 0}).data.val_fraction == 0


def test_unknown_recipe_lists_the_recipes() -> None:
    with pytest.raises(ConfigError, match=r"unknown recipe 'nope'; known: .*debug.*quickstart"):
        train_config(_args("--recipe", "nope"), {})


@pytest.mark.integration  # a fresh interpreter, to see what importing the config loads
def test_the_config_is_a_schema_that_imports_no_registry() -> None:
    # Names (dataset, model, augmentations) are checked where the registries are used
    # (visionops.training.checks); validating a config must stay cheap and cycle-free.
    code = textwrap.dedent(
        """
        import sys
        from visionops.config import Override, TrainConfig, resolve_config

        TrainConfig()
        resolve_config(TrainConfig(), [
            Override("model", "no-such-model", "test"),
            Override("dataset", "no-such-dataset", "test"),
            Override("augmentations", "no-such-augmentation", "test"),
        ])
        heavy = ("torch", "visionops.data", "visionops.models")
        print([m for m in sys.modules if m.split(".")[0] == "torch" or m.startswith(heavy)])
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


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


def test_a_default_warmup_fits_any_run_length() -> None:
    # The default never turns a valid request into an error (epochs 1 with every default).
    assert warmup_epochs_for(TrainConfig(epochs=1).optim, 1) == pytest.approx(0.3)
    assert warmup_epochs_for(TrainConfig(epochs=3).optim, 3) == pytest.approx(0.9)
    assert warmup_epochs_for(TrainConfig(epochs=30).optim, 30) == 1.0
    assert train_config(_args("--epochs", "1"), {}).optim.warmup_epochs is None
    explicit = train_config(_args("--epochs", "4", "--warmup-epochs", "2.5"), {})
    assert warmup_epochs_for(explicit.optim, 4) == 2.5


def test_a_recipes_warmup_scales_with_the_epochs_asked_for(tmp_path: Path) -> None:
    # cifar10-fast warms up for 23% of its run: 2.3 of its 10 epochs, 0.23 of one.
    assert warmup_epochs_for(get_recipe("cifar10-fast").optim, 10) == 2.3
    fast = train_config(_args("--recipe", "cifar10-fast", "--epochs", "1"), {})
    assert (fast.epochs, fast.optim.warmup_epochs) == (1, None)
    assert warmup_epochs_for(fast.optim, fast.epochs) == pytest.approx(0.23)
    # The same whichever layer asks for the epochs.
    from_env = train_config(_args("--recipe", "cifar10-fast"), {"VISIONOPS_EPOCHS": "2"})
    assert warmup_epochs_for(from_env.optim, from_env.epochs) == pytest.approx(0.46)
    overrides = tmp_path / "short.yaml"
    overrides.write_text(yaml.safe_dump({"epochs": 3}))
    from_file = train_config(_args("--recipe", "cifar10-resnet18", "--config", str(overrides)), {})
    assert warmup_epochs_for(from_file.optim, from_file.epochs) == pytest.approx(0.6)
    # An explicit warm-up wins over the recipe's share.
    explicit = train_config(_args("--recipe", "cifar10-fast", "--warmup-epochs", "1"), {})
    assert warmup_epochs_for(explicit.optim, explicit.epochs) == 1.0


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (
            ["--recipe", "cifar10-fast", "--epochs", "1", "--warmup-epochs", "2.3"],
            {},
            "warmup_epochs=2.3 (from --warmup-epochs) must be smaller than epochs=1 (from "
            "--epochs): set warmup_epochs below 1, or to none for a warm-up that scales with "
            "the run (warmup_fraction x epochs; without one, 0.3 x epochs, at most 1)",
        ),
        (
            ["--recipe", "cifar10-fast", "--epochs", "1"],
            {"VISIONOPS_WARMUP_EPOCHS": "4"},
            "warmup_epochs=4.0 (from VISIONOPS_WARMUP_EPOCHS) must be smaller than epochs=1 "
            "(from --epochs): set warmup_epochs below 1",
        ),
        (
            ["--recipe", "cifar10-resnet18", "--warmup-epochs", "25"],
            {},
            "warmup_epochs=25.0 (from --warmup-epochs) must be smaller than epochs=20 (from "
            "the base configuration): set warmup_epochs below 20",
        ),
    ],
)
def test_a_warmup_set_too_long_names_its_source_and_the_fix(
    argv: list[str], environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        train_config(_args(*argv), environ)
    assert expected in str(caught.value)


def test_run_options_are_the_fields_marked_in_the_schema() -> None:
    def marked_in(model: type[BaseModel]) -> set[str]:
        found = set()
        for name, info in model.model_fields.items():
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                found |= marked_in(info.annotation)
            elif isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(
                "run_option"
            ):
                found.add(name)
        return found

    marked = marked_in(TrainConfig)
    assert set(RUN_OPTIONS) == marked
    # What a resume may change: where a run writes and logs, how it loads data, never what
    # it computes.
    assert {"output_dir", "log_every_n_steps", "keep_checkpoints"} <= marked
    assert {"system_metrics", "tracking_uri", "register_as", "num_workers"} <= marked
    assert not {"lr", "epochs", "seed", "batch_size", "model", "augmentations"} & marked


def test_a_resume_ignores_run_options_only() -> None:
    saved = TrainConfig()
    changed = with_fields(saved, log_every_n_steps=3, keep_checkpoints=1, system_metrics=False)
    assert config_differences(saved, changed, ignore=RUN_OPTIONS) == []
    assert config_differences(saved, with_fields(saved, lr=0.3), ignore=RUN_OPTIONS) == [
        "lr: 0.1 -> 0.3"
    ]


def test_run_control_cannot_change_what_a_run_computes() -> None:
    cfg = with_run_options(TrainConfig(), output_dir="elsewhere")
    assert str(cfg.checkpoint.output_dir) == "elsewhere"
    with pytest.raises(ValueError, match="lr change what a run computes"):
        with_run_options(TrainConfig(), lr=0.3)


def test_which_run_to_resume_is_not_configuration() -> None:
    # It is the job's argument, train(cfg, resume=...): nothing writes it into a config.
    assert "resume" not in CONFIG_FIELDS
    assert "resume" not in TrainConfig().checkpoint.model_dump()
    with pytest.raises(
        ConfigError,
        match=r"resume \(from code\) is no longer a config field: .*"
        r"visionops train --resume RUN",
    ):
        with_run_options(TrainConfig(), resume="latest")


# A config.yaml saved while checkpoint.resume was a field (a resumed run's checkpoints held the
# run it had resumed).
_OLD_CHECKPOINT_SECTION = {
    "output_dir": "outputs",
    "checkpoint_every_n_steps": 0,
    "keep_checkpoints": 3,
    "resume": None,
}


@pytest.mark.parametrize("resume", [None, "outputs/0a1b2c"])
def test_a_config_saved_with_checkpoint_resume_still_loads(
    tmp_path: Path, resume: str | None
) -> None:
    saved = TrainConfig().model_dump(mode="json")
    saved["checkpoint"] = {**_OLD_CHECKPOINT_SECTION, "resume": resume, "keep_checkpoints": 2}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(saved, sort_keys=False))

    loaded = load_config(path)  # a bare --resume, evaluate, optimize: the run's config.yaml
    assert loaded.checkpoint.keep_checkpoints == 2
    assert loaded == TrainConfig(checkpoint={"keep_checkpoints": 2})
    assert TrainConfig.model_validate(saved) == loaded  # a checkpoint's or a sweep's config
    save_config(loaded, path)
    assert "resume" not in path.read_text()  # saved again without it


def test_an_old_config_yaml_is_an_overrides_file_too(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"seed": 3, "checkpoint": _OLD_CHECKPOINT_SECTION}))
    assert train_config(_args("--config", str(path)), {}).seed == 3
    # A value there asked for a resume, which a file no longer can: refused, not ignored.
    path.write_text(yaml.safe_dump({"checkpoint": {"resume": "latest"}}))
    with pytest.raises(
        ConfigError,
        match=r"checkpoint.resume \(from config file .*\) is no "
        r"longer a config field: .*--resume RUN",
    ):
        train_config(_args("--config", str(path)), {})
