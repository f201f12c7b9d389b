"""``visionops tune``: a hyperparameter sweep on Ray Tune (see visionops.tuning).

visionops tune --preset quick
visionops tune --recipe quickstart --search hyperopt --scheduler hyperband --num-samples 20
visionops tune --address head:6379 --storage-path /mnt/shared/sweeps --gpus-per-trial 0.5
visionops tune --resume tune-results/sweep-20260101-120000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from visionops import names
from visionops.cli.config_flags import config_overrides
from visionops.cli.output import add_json_flag, emit, mlflow_ui_hint


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from visionops.tuning.algorithms import SCHEDULER_NAMES, SEARCH_NAMES
    from visionops.tuning.presets import PRESETS

    tune = subparsers.add_parser(
        "tune",
        help="search hyperparameters with Ray Tune (nested MLflow runs, best model registered)",
        description="Run a sweep: each trial is `visionops train` with sampled values, tracked "
        "as a child of one MLflow parent run; the best completed trial's model is registered "
        "with alias 'candidate' if it beats chance by --chance-margin. Ctrl-C or SIGTERM stops "
        "the sweep for --resume, registering nothing (exit 130 or 143). A preset sets the "
        "recipe and the sweep size; flags override it.",
    )
    tune.add_argument(
        "--preset",
        default="default",
        choices=PRESETS.names(),
        help="; ".join(f"{p.name}: {p.description}" for p in PRESETS.entries())
        + " (default: default)",
    )
    tune.add_argument("--recipe", help="recipe every trial starts from (default: the preset's)")
    tune.add_argument("--dataset", help="override the recipe's dataset")
    tune.add_argument("--data-dir", help="override the recipe's data folder")
    tune.add_argument(
        "--space", type=Path, metavar="FILE", help="YAML/JSON search-space overrides file"
    )
    tune.add_argument("--search", choices=SEARCH_NAMES, help="search algorithm (default: optuna)")
    tune.add_argument(
        "--scheduler", choices=SCHEDULER_NAMES, help="trial scheduler (default: asha)"
    )
    tune.add_argument("--num-samples", type=int, metavar="N", help="trials to run")
    tune.add_argument("--max-epochs", type=int, metavar="N", help="epochs of a full trial")
    tune.add_argument(
        "--cpus-per-trial", type=float, default=1.0, metavar="F", help="CPUs per trial (1)"
    )
    tune.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0.0,
        metavar="F",
        help="GPUs per trial, fractions share a GPU (0)",
    )
    tune.add_argument(
        "--max-concurrent-trials",
        type=int,
        metavar="N",
        help="trials at once (default: as many as the resources fit)",
    )
    tune.add_argument(
        "--max-failures",
        type=int,
        default=2,
        metavar="N",
        help="restarts of a failing trial from its checkpoint (2)",
    )
    tune.add_argument("--address", help="an existing Ray cluster (default: start a local one)")
    tune.add_argument(
        "--storage-path",
        type=_local_folder,
        default=Path("tune-results"),
        metavar="DIR",
        help="folder of the sweep folders, shared by all nodes on a cluster (tune-results)",
    )
    tune.add_argument(
        "--name", help="the sweep's folder under --storage-path (default: sweep-<time>)"
    )
    tune.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="continue the interrupted sweep in DIR (other sweep flags are taken from it)",
    )
    tune.add_argument(
        "--register-as",
        metavar="NAME",
        help="registered model of the best trial (default: the recipe's, else visionops-tuned)",
    )
    tune.add_argument(
        "--chance-margin",
        type=float,
        metavar="F",
        help="register the best trial only if its val/accuracy beats chance (1/classes) by F "
        "(default: the preset's, 0.1)",
    )
    tune.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    add_json_flag(tune)
    tune.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from visionops.tracking.connection import check_command_server
    from visionops.tuning.interrupt import SweepInterrupted

    # Flags first: a bad one costs no server round trip, no Ray and no run.
    options = sweep_options(args) if args.resume is None else None
    args.tracking_server = check_command_server(args.tracking_uri, config_env=True)
    from visionops.tuning.sweep import resume_sweep, run_sweep

    try:
        if options is None:
            result = resume_sweep(args.resume, address=args.address)
        else:
            result = run_sweep(options)
    except SweepInterrupted as stop:
        print(stop, file=sys.stderr)
        return stop.exit_code
    registered = result.registered_version is not None
    payload: dict[str, Any] = {
        "best_config": result.best_config,
        "best_metric": result.best_metric,
        "metric": names.VAL_ACCURACY,
        "model_uri": result.model_uri,
        "registered_model": {
            "name": result.registered_model,
            "version": result.registered_version,
            "alias": names.CANDIDATE_ALIAS,
        }
        if registered
        else None,
        "registration": result.registration,
        "not_registered": None if registered else result.registration,
        "parent_run_id": result.parent_run_id,
        "best_run_id": result.best_run_id,
        "sweep_dir": str(result.sweep_dir),
        "trials": [
            {"trial_id": t.trial_id, "run_id": t.run_id, "status": t.status, "epochs": t.epochs}
            for t in result.trials
        ],
    }
    statuses = [t.status for t in result.trials]
    lines = [
        f"sweep run:    {result.parent_run_id} ({len(statuses)} trials: "
        + ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses)))
        + ")",
        f"best {names.VAL_ACCURACY}: {result.best_metric:.4f} (run {result.best_run_id})",
        *(f"  {name} = {value}" for name, value in (result.best_config or {}).items()),
        f"registered:   {result.registered_model} version {result.registered_version} "
        f"(alias {names.CANDIDATE_ALIAS}): {result.registration}"
        if registered
        else f"not registered: {result.registration}; {names.CANDIDATE_ALIAS} is unchanged",
        f"model uri:    {result.model_uri}",
        f"sweep folder: {result.sweep_dir} (resume: visionops tune --resume {result.sweep_dir})",
        f"MLflow UI:    {mlflow_ui_hint(args.tracking_server)}",
    ]
    emit(lines, payload, args.json)
    return 0


def sweep_options(args: argparse.Namespace) -> Any:
    """SweepOptions from the preset, the recipe, VISIONOPS_* variables and the flags."""
    from visionops.config import model_from_flags, resolve_config
    from visionops.recipes import get_recipe
    from visionops.tuning.presets import get_preset
    from visionops.tuning.space import create_search_space
    from visionops.tuning.sweep import SweepOptions

    preset = get_preset(args.preset)
    recipe = args.recipe or preset.recipe
    # VISIONOPS_* variables, then the config flags tune has (--dataset, --data-dir, ...).
    base = resolve_config(get_recipe(recipe), config_overrides(args))

    def flag_or_preset(flag: Any, preset_value: Any) -> Any:
        return preset_value if flag is None else flag  # 0 is a value, for the schema to judge

    # The schema checks every numeric flag's range (SweepOptions' Field constraints).
    return model_from_flags(
        SweepOptions,
        {
            "base": base,
            "space": create_search_space(recipe, args.space),
            "recipe": recipe,
            "search": args.search or preset.search,
            "scheduler": args.scheduler or preset.scheduler,
            "num_samples": flag_or_preset(args.num_samples, preset.num_samples),
            "max_epochs": flag_or_preset(args.max_epochs, preset.max_epochs),
            "grace_period": preset.grace_period,
            "reduction_factor": preset.reduction_factor,
            "chance_margin": flag_or_preset(args.chance_margin, preset.chance_margin),
            "cpus_per_trial": args.cpus_per_trial,
            "gpus_per_trial": args.gpus_per_trial,
            "max_concurrent_trials": args.max_concurrent_trials,
            "max_failures": args.max_failures,
            "address": args.address,
            "storage_path": args.storage_path,
            "name": args.name,
            "register_as": args.register_as,
        },
    )


def _local_folder(value: str) -> Path:
    """A --storage-path: trials write their runs there with plain file I/O, so URIs (s3://,
    gs://) are refused rather than taken for a folder named 's3:'."""
    if "://" in value:
        raise argparse.ArgumentTypeError(
            f"{value!r} is a URI; --storage-path takes a folder every Ray node can reach "
            "(a shared file system on a cluster)"
        )
    return Path(value)
