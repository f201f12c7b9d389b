"""``visionops train``: train a model (tracked in MLflow, resumable), here or on N processes.

visionops train --recipe quickstart
visionops train --model resnet18 --dataset cifar10 --epochs 30 --register-as clf
visionops train --resume
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from visionops.cli.config_flags import add_config_flags, config_overrides
from visionops.cli.launch_flags import add_launch_flags, launch_requested
from visionops.cli.output import add_json_flag, emit_train_result
from visionops.config import TrainConfig, overrides_from_file, resolve_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
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
    add_config_flags(train)
    train.set_defaults(func=cmd_train)


def train_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> TrainConfig:
    """Resolve flag > VISIONOPS_* > overrides file > recipe > defaults (or the saved config)."""
    return train_job(args, environ)[0]


def train_job(
    args: argparse.Namespace, environ: dict[str, str] | None = None
) -> tuple[TrainConfig, str | None]:
    """The configuration (as ``train_config``) and the run ``--resume`` names (None: a new
    run), which ``train`` takes beside the configuration."""
    env_and_flags = config_overrides(args, environ=environ)
    resume = getattr(args, "resume", None)
    recipe, config_file = getattr(args, "recipe", None), getattr(args, "config", None)
    if resume is None or recipe or config_file:
        # A fresh run, or a resume that repeats the original command: train() checks that the
        # resolved configuration still matches the one saved with the run.
        from visionops.recipes import get_recipe

        base = get_recipe(recipe or "default")
        file_overrides = overrides_from_file(Path(config_file)) if config_file else []
        return resolve_config(base, [*file_overrides, *env_and_flags]), resume or None

    # A bare --resume starts from the configuration saved with the run.
    from visionops.training.trainer import saved_run

    defaults = resolve_config(TrainConfig(), config_overrides(args, ["output_dir"], environ))
    run_dir, saved = saved_run(resume, defaults.checkpoint.output_dir)
    return resolve_config(saved, env_and_flags), str(run_dir)


def cmd_train(args: argparse.Namespace) -> int:
    from visionops.cli.credentials import config_without_credentials
    from visionops.tracking.connection import check_command_server
    from visionops.training.checks import check_names

    # A password in an overrides file's or an old saved run's URI goes the flag's way.
    cfg, resume = train_job(args)
    cfg = config_without_credentials(cfg, os.environ)
    check_names(cfg)  # checked here, before a launcher starts any worker

    args.tracking_server = check_command_server(cfg.tracking.tracking_uri)
    launched = launch_requested(args, cfg, resume)
    if launched is not None:
        return launched
    from visionops.training import train
    from visionops.training.world import world_from_env

    result = train(cfg, resume=resume)
    if not world_from_env().is_main:
        return 0  # a torchrun worker: rank 0 reports for the job
    emit_train_result(result, cfg.tracking.register_as, args.json, args.tracking_server)
    return 0
