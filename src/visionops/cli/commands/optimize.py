"""``visionops optimize``: build, measure, report and register variants of a registered model.

visionops optimize --model-uri models:/vision-classifier/1 --methods onnx,int8-dynamic
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visionops.cli.model_flags import add_model_uri_and_data, data_overrides
from visionops.cli.output import add_json_flag, emit, mlflow_ui_hint


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from visionops.optimize.options import (
        DEFAULT_METHODS,
        MIN_CALIBRATION_IMAGES,
        OptimizeOptions,
    )

    defaults = OptimizeOptions(methods=DEFAULT_METHODS)
    optimize = subparsers.add_parser(
        "optimize",
        help="build, measure, report and register optimised variants of a registered model",
        description="Build every variant of MODEL_URI (ONNX, INT8, pruning, OpenVINO, ...), "
        "measure each on the same validation images and the same CPU, write "
        "optimize_report.{json,md} and a Pareto plot to one parent MLflow run, and register "
        "each variant as a new version of the same registered model (tags visionops.variant, "
        "visionops.source_version). A method that fails is a 'skipped: reason' row.",
    )
    add_model_uri_and_data(optimize)
    optimize.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated methods [default: {','.join(DEFAULT_METHODS)}]",
    )
    optimize.add_argument(
        "--calibration-images",
        type=int,
        default=defaults.calibration_images,
        metavar="N",
        help=f"training images for INT8 calibration, drawn with the seed (at least "
        f"{MIN_CALIBRATION_IMAGES}) [default: {defaults.calibration_images}]",
    )
    optimize.add_argument(
        "--calibration-method",
        choices=["minmax", "entropy", "percentile"],
        default=defaults.calibration_method,
        help=f"activation range calibration of int8-static [default: "
        f"{defaults.calibration_method}]",
    )
    optimize.add_argument(
        "--finetune-epochs",
        type=int,
        default=defaults.finetune_epochs,
        metavar="K",
        help=f"epochs of fine-tuning for qat and prune-structured [default: "
        f"{defaults.finetune_epochs}]",
    )
    optimize.add_argument(
        "--finetune-lr-fraction",
        type=float,
        default=defaults.finetune_lr_fraction,
        metavar="F",
        help=f"fine-tuning's peak learning rate as a fraction of the source run's "
        f"[default: {defaults.finetune_lr_fraction}]",
    )
    optimize.add_argument(
        "--prune-ratio",
        type=float,
        default=defaults.prune_ratio,
        metavar="R",
        help=f"fraction of the parameters pruning removes [default: {defaults.prune_ratio}]",
    )
    optimize.add_argument(
        "--opset", type=int, default=defaults.opset, help="ONNX opset [default: %(default)s]"
    )
    optimize.add_argument(
        "--select-for-latency-ms",
        type=float,
        metavar="X",
        help="put alias 'candidate' on the most accurate variant whose p95 latency at batch 1 "
        "(one thread) is at most X ms",
    )
    optimize.add_argument(
        "--latency-runs",
        type=int,
        default=defaults.latency_runs,
        help="timed batch-1 passes per variant and thread count [default: %(default)s]",
    )
    optimize.add_argument(
        "--threads",
        help="comma-separated thread counts to time on [default: "
        f"{','.join(map(str, defaults.threads))}: one and every core]",
    )
    optimize.add_argument(
        "--output-dir",
        default="outputs/optimize",
        help="folder for the variant files and the report [default: %(default)s]",
    )
    optimize.add_argument("--experiment", help="MLflow experiment (default: the source run's)")
    add_json_flag(optimize)
    optimize.set_defaults(func=cmd_optimize)


def cmd_optimize(args: argparse.Namespace) -> int:
    from visionops.config import model_from_flags
    from visionops.optimize.options import OptimizeOptions
    from visionops.optimize.pipeline import check_methods, optimize_model
    from visionops.tracking.connection import check_command_server

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    check_methods(methods)
    # Every range is checked by the schema, here, before the server or a model is touched.
    values = {name: getattr(args, name, None) for name in OptimizeOptions.model_fields}
    values = {name: value for name, value in values.items() if value is not None}
    if args.threads is not None:
        values["threads"] = [t.strip() for t in args.threads.split(",")]
    options = model_from_flags(OptimizeOptions, {**values, "methods": methods})
    args.tracking_server = check_command_server(args.tracking_uri)
    result = optimize_model(
        args.model_uri,
        options,
        tracking_uri=args.tracking_server,
        data_overrides=data_overrides(args),
        output_dir=Path(args.output_dir),
        experiment=args.experiment,
    )
    lines = [result.report.markdown(), f"report: {result.report_path}"]
    lines.append(f"MLflow run {result.parent_run_id}: {mlflow_ui_hint(args.tracking_server)}")
    emit(lines, result.as_json(), args.json)
    return 0
