"""``visionops alias show|set``: the aliases of a registered model.

visionops alias show --model vision-classifier --require production
visionops alias set --model vision-classifier --alias staging --version 4
"""

from __future__ import annotations

import argparse

from visionops.cli.model_flags import add_model_and_alias, add_tracking_and_json
from visionops.cli.output import emit


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    alias = subparsers.add_parser("alias", help="show or set the aliases of a registered model")
    alias_commands = alias.add_subparsers(dest="alias_command", required=True, metavar="COMMAND")
    show = alias_commands.add_parser(
        "show",
        help="the aliases of a model and the versions they point to",
        description="Print each alias of MODEL and its version; with --json, one object "
        '{"model": MODEL, "aliases": {ALIAS: VERSION, ...}}.',
    )
    show.add_argument("--model", required=True, help="registered model name")
    show.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="ALIAS",
        help="exit 2 unless ALIAS points to a version (repeatable)",
    )
    add_tracking_and_json(show)
    set_ = alias_commands.add_parser(
        "set",
        help="point an alias at a version (not production: that is `visionops promote`)",
        description="Point ALIAS of MODEL at VERSION and record the move in the alias history "
        "(so `visionops rollback` can undo it). Aliases the promotion gate guards "
        "(production) are refused.",
    )
    add_model_and_alias(set_)
    set_.add_argument("--version", type=int, required=True, help="model version")
    add_tracking_and_json(set_)
    alias.set_defaults(func=cmd_alias)


def cmd_alias(args: argparse.Namespace) -> int:
    from visionops.tracking.connection import check_command_server

    args.tracking_server = check_command_server(args.tracking_uri)
    from visionops.errors import ConfigError
    from visionops.registry.aliases import model_aliases, set_alias

    if args.alias_command == "set":
        move = set_alias(args.model, args.alias, args.version, args.tracking_uri)
        line = f"{args.model} {move.alias!r} -> version {move.version}"
        emit([f"{line} (was {move.previous_version or 'none'})"], move.as_dict(), args.json)
        return 0
    aliases = model_aliases(args.model, args.tracking_uri)
    emit(
        [f"{alias}: version {version}" for alias, version in aliases.items()] or ["no aliases"],
        {"model": args.model, "aliases": aliases},
        args.json,
    )
    missing = [alias for alias in args.require if alias not in aliases]
    if missing:
        raise ConfigError(
            f"model {args.model!r} has no {' or '.join(map(repr, missing))} alias; "
            "it points to no version"
        )
    return 0
