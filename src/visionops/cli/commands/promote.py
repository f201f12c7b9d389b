"""``visionops promote``: move a registry alias to a version that passes the promotion gate.

visionops promote --model vision-classifier --version 3 --alias production
"""

from __future__ import annotations

import argparse

from visionops.cli.model_flags import add_model_and_alias, add_tracking_and_json
from visionops.cli.output import emit
from visionops.registry.policy import (
    DEFAULT_LATENCY_BUDGET_MS,
    DEFAULT_LATENCY_RUNS,
    DEFAULT_LATENCY_THREADS,
    DEFAULT_MAX_ACCURACY_DROP,
)

#: Exit code of a promotion the gate rejected (user errors exit 2).
EXIT_REJECTED = 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    promote = subparsers.add_parser(
        "promote",
        help="move a registry alias to a model version that passes the promotion gate",
        description="Point ALIAS of MODEL at VERSION if its val/accuracy is not worse than the "
        "current holder's (minus --max-accuracy-drop) and its p95 CPU latency at batch 1 is "
        "within --latency-budget-ms. The decision and evidence are written as "
        "visionops.promotion.<alias>.* tags on the version; a rejection exits 1.",
    )
    add_model_and_alias(promote)
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
    add_tracking_and_json(promote)
    promote.set_defaults(func=cmd_promote)


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
