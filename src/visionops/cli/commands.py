"""The subcommands: parse -> build config -> call a library function -> print."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from visionops.cli.launch_flags import launch_requested
from visionops.cli.output import emit, emit_train_result, mlflow_ui_hint
from visionops.cli.parser import config_overrides
from visionops.config import (
    Override,
    TrainConfig,
    overrides_from_file,
    overrides_from_mapping,
    resolve_config,
)


def train_config(args: argparse.Namespace, environ: dict[str, str] | None = None) -> TrainConfig:
    """Resolve flag > VISIONOPS_* > overrides file > recipe > defaults (or the saved config)."""
    env_and_flags = config_overrides(args, environ=environ)
    resume = getattr(args, "resume", None)
    recipe, config_file = getattr(args, "recipe", None), getattr(args, "config", None)
    if resume is None or recipe or config_file:
        # A fresh run, or a resume that repeats the original command: train() checks that the
        # resolved configuration still matches the one saved with the run.
        from visionops.recipes import get_recipe

        base = get_recipe(recipe or "default")
        file_overrides = overrides_from_file(Path(config_file)) if config_file else []
        resume_override = [Override("resume", resume, "--resume")] if resume else []
        return resolve_config(base, [*file_overrides, *env_and_flags, *resume_override])

    # A bare --resume starts from the configuration saved with the run.
    from visionops.training.trainer import saved_run

    defaults = resolve_config(TrainConfig(), config_overrides(args, ["output_dir"], environ))
    run_dir, saved = saved_run(resume, defaults.checkpoint.output_dir)
    return resolve_config(saved, [*env_and_flags, Override("resume", str(run_dir), "--resume")])


def cmd_train(args: argparse.Namespace) -> int:
    from visionops.cli.credentials import config_without_credentials
    from visionops.tracking.connection import check_command_server
    from visionops.training.checks import check_names

    # A password in an overrides file's or an old saved run's URI goes the flag's way.
    cfg = config_without_credentials(train_config(args), os.environ)
    check_names(cfg)  # checked here, before a launcher starts any worker

    args.tracking_server = check_command_server(cfg.tracking.tracking_uri)
    launched = launch_requested(args, cfg)
    if launched is not None:
        return launched
    from visionops.training import train
    from visionops.training.world import world_from_env

    result = train(cfg)
    if not world_from_env().is_main:
        return 0  # a torchrun worker: rank 0 reports for the job
    emit_train_result(result, cfg.tracking.register_as, args.json, args.tracking_server)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from visionops.tracking.connection import check_command_server

    args.tracking_server = check_command_server(args.tracking_uri)
    overrides = overrides_from_mapping(
        {
            k: v
            for k, v in {
                "dataset": args.dataset,
                "data_dir": args.data_dir,
                "device": args.device,
            }.items()
            if v
        },
        "command line",
    )
    from visionops.training.model_eval import evaluate_model

    evaluation = evaluate_model(
        args.model_uri, args.split, overrides, tracking_uri=args.tracking_uri
    )
    result = evaluation.result
    payload = {
        "model_uri": evaluation.model_uri,
        "split": evaluation.split,
        "run_id": evaluation.run_id,
        "source_run_id": evaluation.source_run_id,
        "metrics": {"accuracy": result.accuracy, "loss": result.loss},
        "per_class_accuracy": dict(zip(evaluation.classes, result.per_class_accuracy, strict=True)),
        "confusion_matrix": result.confusion.tolist(),
        "num_images": result.num_images,
    }
    lines = [
        f"model:     {evaluation.model_uri}",
        f"split:     {evaluation.split} ({result.num_images} images)",
        f"accuracy:  {result.accuracy:.4f}",
        f"loss:      {result.loss:.4f}",
        *(
            f"  {name:<14} {acc:.4f}"
            for name, acc in zip(evaluation.classes, result.per_class_accuracy, strict=True)
        ),
        f"logged to MLflow run {evaluation.run_id}",
        f"MLflow UI: {mlflow_ui_hint(args.tracking_server)}",
    ]
    emit(lines, payload, args.json)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from visionops.models import model_specs

    specs = model_specs()
    payload = {
        "models": [
            {"name": s.name, "description": s.description, "width_multiplier": s.supports_width}
            for s in specs
        ]
    }
    emit([f"{s.name:<20} {s.description}" for s in specs], payload, args.json)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from visionops.data.datasets import DATASETS

    specs = DATASETS.entries()
    payload = {
        "datasets": [
            {"name": s.name, "description": s.description, "cacheable": s.cacheable} for s in specs
        ]
    }
    emit([f"{s.name:<12} {s.description}" for s in specs], payload, args.json)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from visionops.recipes import list_recipes

    recipes = list_recipes()
    payload = {"recipes": [{"name": r.name, "description": r.description} for r in recipes]}
    emit([f"{r.name:<14} {r.description}" for r in recipes], payload, args.json)
    return 0


def cmd_augmentations(args: argparse.Namespace) -> int:
    from visionops.data.transforms import augmentation_specs

    specs = augmentation_specs()

    def loaders(spec: Any) -> list[str]:
        if not spec.image_stage:
            return ["device", "classic"]
        return [
            name for name, impl in (("device", spec.batched), ("classic", spec.per_image)) if impl
        ]

    payload = {
        "augmentations": [
            {
                "name": s.name,
                "description": s.description,
                "stage": "image" if s.image_stage else "batch",
                "loaders": loaders(s),
            }
            for s in specs
        ]
    }
    lines = [f"{s.name:<17} {'+'.join(loaders(s)):<15} {s.description}" for s in specs]
    emit(lines, payload, args.json)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from visionops.data.cache import cache_entries, decoded_source

    cache_to_disk = Override("cache", "disk", "visionops data cache")
    cfg = resolve_config(TrainConfig(), [*config_overrides(args), cache_to_disk])
    if args.list:
        entries = list(cache_entries(cfg.data.cache_dir))
        lines = [
            f"{e['path']}  {e['dataset']}  {sum(e['splits'].values())} images  "
            f"{e['bytes'] / 2**20:.1f} MiB  from {e['source']}"
            for e in entries
        ] or [f"no cached datasets in {cfg.data.cache_dir}"]
        emit(lines, {"entries": entries}, args.json)
        return 0
    info = decoded_source(cfg.data).info  # refuses a dataset generated in memory
    payload = asdict(info)
    lines = [
        f"{'reused' if info.reused else 'created'} {info.location}",
        *(f"  {name}: {count} images" for name, count in info.num_images.items()),
        f"  {info.nbytes / 2**20:.1f} MiB decoded, {info.seconds:.1f} s",
    ]
    emit(lines, payload, args.json)
    return 0


def _team_commands() -> dict[str, Any]:
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

    return {
        **server_commands.COMMANDS,
        **admin_commands.COMMANDS,
        **registry_commands.COMMANDS,
        **tracking_commands.COMMANDS,
        **tune_commands.COMMANDS,
        **optimize_commands.COMMANDS,
        **serve_commands.COMMANDS,
        **alerts_commands.COMMANDS,
    }


COMMANDS = {
    **_team_commands(),
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "models": cmd_models,
    "datasets": cmd_datasets,
    "recipes": cmd_recipes,
    "augmentations": cmd_augmentations,
    "data": cmd_data,
}
