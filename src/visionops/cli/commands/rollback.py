"""``visionops rollback``: move a registry alias back to its previous holder.

visionops rollback --model vision-classifier --alias production
"""

from __future__ import annotations

import argparse

from visionops.cli.model_flags import add_model_and_alias, add_tracking_and_json
from visionops.cli.output import emit


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    rollback = subparsers.add_parser(
        "rollback",
        help="move a registry alias back to its previous holder",
        description="Point ALIAS of MODEL back at the version that held it before the current "
        "one, from the alias history visionops keeps (deleted versions are skipped).",
    )
    add_model_and_alias(rollback)
    add_tracking_and_json(rollback)
    rollback.set_defaults(func=cmd_rollback)


def cmd_rollback(args: argparse.Namespace) -> int:
    from visionops.tracking.connection import check_command_server

    args.tracking_server = check_command_server(args.tracking_uri)
    from visionops.registry.rollback import rollback

    result = rollback(args.model, args.alias, tracking_uri=args.tracking_uri)
    lines = [
        f"rolled back {args.model} {result.alias!r}: version {result.from_version} -> "
        f"{result.to_version}",
        *(f"skipped deleted version {v}" for v in result.skipped_versions),
    ]
    emit(lines, result.as_dict(), args.json)
    return 0
