"""``visionops export``: a logged model as an ONNX file, checked against PyTorch.

visionops export --model-uri models:/vision-classifier/1 --output model.onnx
"""

from __future__ import annotations

import argparse
from pathlib import Path

from visionops.cli.model_flags import add_model_uri_and_data, data_overrides
from visionops.cli.output import add_json_flag, emit


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export",
        help="export a logged model to ONNX, checked against PyTorch",
        description="Export MODEL_URI with torch.onnx's dynamo exporter (dynamic batch axis), "
        "check it with onnx.checker, and check ONNX Runtime against PyTorch on validation "
        "images: max abs logit difference < 1e-4 and the same top-1 class.",
    )
    add_model_uri_and_data(export)
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
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from visionops.optimize.export import export_registered
    from visionops.tracking.connection import check_command_server

    args.tracking_server = check_command_server(args.tracking_uri)
    result = export_registered(
        args.model_uri,
        Path(args.output) if args.output else None,
        opset=args.opset,
        tracking_uri=args.tracking_server,
        data_overrides=data_overrides(args),
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
