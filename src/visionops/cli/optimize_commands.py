"""``visionops optimize`` and ``visionops export``: variants of a registered model, ONNX files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from visionops.cli.output import add_json_flag, emit, mlflow_ui_hint


def add_parsers(commands: argparse._SubParsersAction) -> None:
    from visionops.optimize.options import (
        DEFAULT_METHODS,
        MIN_CALIBRATION_IMAGES,
        OptimizeOptions,
    )

    defaults = OptimizeOptions(methods=DEFAULT_METHODS)
    optimize = commands.add_parser(
        "optimize",
        help="build, measure, report and register optimised variants of a registered model",
        description="Build every variant of MODEL_URI (ONNX, INT8, pruning, OpenVINO, ...), "
        "measure each on the same validation images and the same CPU, write "
        "optimize_report.{json,md} and a Pareto plot to one parent MLflow run, and register "
        "each variant as a new version of the same registered model (tags visionops.variant, "
        "visionops.source_version). A method that fails is a 'skipped: reason' row.",
    )
    _add_model_flags(optimize)
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

    export = commands.add_parser(
        "export",
        help="export a logged model to ONNX, checked against PyTorch",
        description="Export MODEL_URI with torch.onnx's dynamo exporter (dynamic batch axis), "
        "check it with onnx.checker, and check ONNX Runtime against PyTorch on validation "
        "images: max abs logit difference < 1e-4 and the same top-1 class.",
    )
    _add_model_flags(export)
    export.add_argument("--format", choices=["onnx"], default="onnx", help="export format")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset [default: 18]")
    export.add_argument(
        "--output", help="file to write [default: NAME-VERSION.onnx in the current folder]"
    )
    export.add_argument(
        "--parity-images",
        type=int,
        default=256,
        help="validation images ONNX Runtime must reproduce [default: %(default)s]",
    )
    add_json_flag(export)


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-uri",
        required=True,
        help="registered model: models:/NAME/VERSION or models:/NAME/ALIAS",
    )
    parser.add_argument("--dataset", help="override the training run's dataset")
    parser.add_argument("--data-dir", help="override the training run's data folder")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")


def _data_overrides(args: argparse.Namespace) -> list[Any]:
    from visionops.config import overrides_from_mapping

    values = {"dataset": args.dataset, "data_dir": args.data_dir}
    return overrides_from_mapping({k: v for k, v in values.items() if v}, "command line")


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
        data_overrides=_data_overrides(args),
        output_dir=Path(args.output_dir),
        experiment=args.experiment,
    )
    lines = [result.report.markdown(), f"report: {result.report_path}"]
    lines.append(f"MLflow run {result.parent_run_id}: {mlflow_ui_hint(args.tracking_server)}")
    emit(lines, result.as_json(), args.json)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from visionops.optimize.export import export_registered
    from visionops.tracking.connection import check_command_server

    args.tracking_server = check_command_server(args.tracking_uri)
    result = export_registered(
        args.model_uri,
        Path(args.output) if args.output else None,
        opset=args.opset,
        tracking_uri=args.tracking_server,
        data_overrides=_data_overrides(args),
        parity_images=args.parity_images,
    )
    parity = result.parity
    lines = [
        f"wrote {result.path} (ONNX opset {result.opset}, {result.size_mb:.2f} MB, dynamic batch)",
        f"parity with PyTorch on {parity.images} images: max abs logit difference "
        f"{parity.max_abs_diff:.2e}, top-1 agreement {100 * parity.top1_agreement:.1f}%",
    ]
    emit(lines, result.as_dict(), args.json)
    return 0


COMMANDS = {"optimize": cmd_optimize, "export": cmd_export}
