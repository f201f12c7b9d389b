"""The argument parser; ``visionops train`` flags are generated from the config tree."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping

from visionops.cli.launch_flags import add_launch_flags
from visionops.cli.output import add_json_flag
from visionops.config import CONFIG_FIELDS, FieldSpec, Override, describe_type
from visionops.env import config_env_var, config_overrides_from_env

# Flags of `train` that are not config fields, or config fields with a hand-written flag.
_SPECIAL = {"resume"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionops", description="Train, track and ship image classifiers."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model (tracked in MLflow, resumable)",
        description="Train a model. Precedence: flag > VISIONOPS_<FIELD> > --config file > "
        "--recipe > defaults.",
        argument_default=argparse.SUPPRESS,
    )
    train.add_argument("--recipe", help="named recipe to start from (see `visionops recipes`)")
    train.add_argument("--config", help="YAML/JSON overrides file, nested like config.yaml or flat")
    train.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="RUN",
        help="continue a run from its newest valid checkpoint: 'latest' (default), a run id, "
        "a run folder or a checkpoint file; the run keeps its saved configuration",
    )
    add_json_flag(train)
    add_launch_flags(train)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in CONFIG_FIELDS.values():
        if spec.flat in _SPECIAL:
            continue
        section = spec.path[0] if len(spec.path) > 1 else "training"
        group = groups.setdefault(section, train.add_argument_group(f"{section} options"))
        _add_config_flag(group, spec)

    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate a logged model and record the result in MLflow",
        description="Evaluate an MLflow model on the data split its training run used.",
    )
    evaluate.add_argument(
        "--model-uri", required=True, help="MLflow model URI (models:/NAME/VERSION, runs:/...)"
    )
    evaluate.add_argument(
        "--split", default="val", choices=["train", "val", "test"], help="split to evaluate"
    )
    evaluate.add_argument("--dataset", help="override the training run's dataset")
    evaluate.add_argument("--data-dir", help="override the training run's data folder")
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device to evaluate on")
    evaluate.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)"
    )
    add_json_flag(evaluate)

    models = commands.add_parser("models", help="list the registered model architectures")
    add_json_flag(models)
    datasets = commands.add_parser("datasets", help="list the datasets --dataset accepts")
    add_json_flag(datasets)
    recipes = commands.add_parser("recipes", help="list the named training recipes")
    add_json_flag(recipes)
    augmentations = commands.add_parser("augmentations", help="list the training augmentations")
    add_json_flag(augmentations)

    data = commands.add_parser("data", help="prepare datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    cache = data_commands.add_parser(
        "cache",
        help="decode a dataset once into the disk cache that training reuses",
        description="Decode --dataset from --data-dir into uint8 arrays under --cache-dir "
        "(reused by every run with the same source files and image size). With --list, show "
        "the cache instead.",
        argument_default=argparse.SUPPRESS,
    )
    for flat in _DATA_CACHE_FIELDS:
        _add_config_flag(cache, CONFIG_FIELDS[flat])
    cache.add_argument(
        "--list", action="store_true", default=False, help="list the cached datasets and exit"
    )
    add_json_flag(cache)

    # The team-stack commands build their own parsers, next to their implementations.
    from visionops.cli import (
        admin_commands,
        alerts_commands,
        optimize_commands,
        registry_commands,
        serve_commands,
        server_commands,
        tracking_commands,
        tune_commands,
    )

    for module in (
        server_commands,
        admin_commands,
        registry_commands,
        tracking_commands,
        tune_commands,
        optimize_commands,
        serve_commands,
        alerts_commands,
    ):
        module.add_parsers(commands)
    return parser


#: The config fields that decide what `visionops data cache` decodes and where it goes.
_DATA_CACHE_FIELDS = ("dataset", "data_dir", "download", "image_size", "cache_dir")


def _add_config_flag(
    group: argparse._ArgumentGroup | argparse.ArgumentParser, spec: FieldSpec
) -> None:
    default = ",".join(spec.default) if isinstance(spec.default, tuple) else spec.default
    help_text = f"{spec.description} [{config_env_var(spec.flat)}; default: {default}]"
    if spec.annotation is bool:
        group.add_argument(
            spec.flag, dest=spec.flat, action=argparse.BooleanOptionalAction, help=help_text
        )
    else:
        group.add_argument(spec.flag, dest=spec.flat, metavar=_metavar(spec), help=help_text)


def _metavar(spec: FieldSpec) -> str:
    if spec.choices:
        return describe_type(spec.annotation)
    return (
        describe_type(spec.annotation)
        .removesuffix(" or None")
        .replace("comma-separated list", "A,B")
        .upper()
    )


def config_overrides(
    args: argparse.Namespace,
    fields: Iterable[str] = CONFIG_FIELDS,
    environ: Mapping[str, str] | None = None,
) -> list[Override]:
    """The values of config ``fields`` that ``VISIONOPS_<FIELD>`` variables set, then those the
    command line set (a later override wins), each naming where it came from.

    A command's flag counts when its parser stored a value for it: ``train`` suppresses unset
    flags, other commands leave them None.
    """
    fields = [flat for flat in fields if flat not in _SPECIAL]
    from_env = config_overrides_from_env(fields, environ)
    overrides = [Override(flat, value, config_env_var(flat)) for flat, value in from_env.items()]
    for flat in fields:
        value = getattr(args, flat, None)
        if value is not None:
            overrides.append(Override(flat, value, CONFIG_FIELDS[flat].flag))
    return overrides
