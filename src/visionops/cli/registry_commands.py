"""``visionops promote``, ``rollback`` and ``alias``: the registry workflow on MLflow aliases."""

from __future__ import annotations

import argparse
from typing import Any

from visionops.cli.output import add_json_flag, emit
from visionops.registry.policy import (
    DEFAULT_LATENCY_BUDGET_MS,
    DEFAULT_LATENCY_RUNS,
    DEFAULT_LATENCY_THREADS,
    DEFAULT_MAX_ACCURACY_DROP,
)

#: Exit code of a promotion the gate rejected (user errors exit 2).
EXIT_REJECTED = 1


def add_parsers(commands: argparse._SubParsersAction) -> None:
    promote = commands.add_parser(
        "promote",
        help="move a registry alias to a model version that passes the promotion gate",
        description="Point ALIAS of MODEL at VERSION if its val/accuracy is not worse than the "
        "current holder's (minus --max-accuracy-drop) and its p95 CPU latency at batch 1 is "
        "within --latency-budget-ms. The decision and evidence are written as "
        "visionops.promotion.<alias>.* tags on the version; a rejection exits 1.",
    )
    _add_model_and_alias(promote)
    promote.add_argument("--version", type=int, required=True, help="model version to promote")
    promote.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=DEFAULT_MAX_ACCURACY_DROP,
        metavar="FRACTION",
        help="how much lower the candidate's val/accuracy may be than the current holder's, as "
        f"a fraction (0.005 = half a point) [default: {DEFAULT_MAX_ACCURACY_DROP}]",
    )
    promote.add_argument(
        "--latency-budget-ms",
        type=float,
        default=DEFAULT_LATENCY_BUDGET_MS,
        metavar="MS",
        help="largest accepted p95 CPU latency of one image, in milliseconds "
        f"[default: {DEFAULT_LATENCY_BUDGET_MS}]",
    )
    promote.add_argument(
        "--latency-runs",
        type=int,
        default=DEFAULT_LATENCY_RUNS,
        metavar="N",
        help=f"timed single-image runs after the warm-up [default: {DEFAULT_LATENCY_RUNS}]",
    )
    promote.add_argument(
        "--latency-threads",
        type=int,
        default=DEFAULT_LATENCY_THREADS,
        metavar="N",
        help="torch threads while timing, as in the serving worker "
        f"[default: {DEFAULT_LATENCY_THREADS}]",
    )
    promote.add_argument(
        "--force",
        action="store_true",
        help="move the alias even if the gate fails or a val/accuracy is missing; the gate is "
        "still measured and the override is recorded (decision 'forced')",
    )
    _add_tracking_and_json(promote)

    rollback = commands.add_parser(
        "rollback",
        help="move a registry alias back to its previous holder",
        description="Point ALIAS of MODEL back at the version that held it before the current "
        "one, from the alias history visionops keeps (deleted versions are skipped).",
    )
    _add_model_and_alias(rollback)
    _add_tracking_and_json(rollback)

    alias = commands.add_parser("alias", help="show or set the aliases of a registered model")
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
    _add_tracking_and_json(show)
    set_ = alias_commands.add_parser(
        "set",
        help="point an alias at a version (not production: that is `visionops promote`)",
        description="Point ALIAS of MODEL at VERSION and record the move in the alias history "
        "(so `visionops rollback` can undo it). Aliases the promotion gate guards "
        "(production) are refused.",
    )
    _add_model_and_alias(set_)
    set_.add_argument("--version", type=int, required=True, help="model version")
    _add_tracking_and_json(set_)


def _add_model_and_alias(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--alias", required=True, help="alias, e.g. production or staging")


def _add_tracking_and_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    add_json_flag(parser)


def cmd_promote(args: argparse.Namespace) -> int:
    from visionops.tracking.connection import check_command_server

    args.tracking_server = check_command_server(args.tracking_uri)
    from visionops.registry.policy import PromotionPolicy
    from visionops.registry.promotion import promote

    policy = PromotionPolicy(
        max_accuracy_drop=args.max_accuracy_drop,
        latency_budget_ms=args.latency_budget_ms,
        latency_runs=args.latency_runs,
        latency_threads=args.latency_threads,
    )
    result = promote(
        args.model,
        args.version,
        args.alias,
        policy,
        force=args.force,
        tracking_uri=args.tracking_uri,
    )
    target = f"{args.model} version {result.version} -> {result.alias!r}"
    lines = [f"{result.decision}: {target}: {result.reason}"]
    if result.decision == "unchanged":
        lines = [f"unchanged: {result.reason}"]
    elif result.alias_moved:
        previous = result.incumbent_version or "none"
        lines.append(f"{result.alias!r} now points to version {result.version} (was {previous})")
    emit(lines, result.as_dict(), args.json)
    return EXIT_REJECTED if result.decision == "rejected" else 0


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


COMMANDS: dict[str, Any] = {"promote": cmd_promote, "rollback": cmd_rollback, "alias": cmd_alias}
