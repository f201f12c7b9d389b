"""``visionops models``: the registered model architectures (what ``--model`` accepts)."""

from __future__ import annotations

import argparse

from visionops.cli.output import add_json_flag, columns, emit


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="list the registered model architectures")
    add_json_flag(models)
    models.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from visionops.models import model_specs

    specs = model_specs()
    payload = {
        "models": [
            {"name": s.name, "description": s.description, "width_multiplier": s.supports_width}
            for s in specs
        ]
    }
    emit(columns((s.name, s.description) for s in specs), payload, args.json)
    return 0
