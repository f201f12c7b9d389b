"""``visionops tracking replay``: send metric points spooled while the tracking server was away."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from visionops.cli.config_flags import config_overrides
from visionops.cli.output import add_json_flag, emit
from visionops.errors import VisionOpsError

EXIT_SOMETHING_REMAINS = 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    tracking = subparsers.add_parser(
        "tracking",
        help="tracking-server maintenance (replay spooled metric points)",
        description="Commands about the runs' connection to the tracking server.",
    )
    actions = tracking.add_subparsers(dest="tracking_command", required=True, metavar="COMMAND")
    replay = actions.add_parser(
        "replay",
        help="send the metric points runs spooled while the tracking server was unreachable",
        description="Send the points in RUN_DIR/tracking-spool/ (oldest first) and a run end "
        "status the server missed. Points MLflow already holds are not stored twice. Exits 0 "
        "when everything was sent, 1 when something remains.",
    )
    replay.add_argument(
        "run_dirs",
        nargs="*",
        type=Path,
        metavar="RUN_DIR",
        help="run folders (default: every run folder under --output-dir with a spool)",
    )
    replay.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="where to look for run folders (default: VISIONOPS_OUTPUT_DIR, else outputs)",
    )
    replay.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="send to this server (default: MLFLOW_TRACKING_URI, else the one each run used)",
    )
    add_json_flag(replay)
    tracking.set_defaults(func=cmd_tracking)


def cmd_tracking(args: argparse.Namespace) -> int:
    from mlflow.environment_variables import MLFLOW_TRACKING_URI

    from visionops.tracking.sender import replay_run

    tracking_uri = args.tracking_uri or MLFLOW_TRACKING_URI.get() or None
    run_dirs = args.run_dirs or _spooled_run_dirs(args.output_dir or _default_output_dir(args))
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise VisionOpsError(f"{run_dir} is not a folder; give a run folder like outputs/<id>")
    reports = [replay_run(run_dir, tracking_uri) for run_dir in run_dirs]

    lines = [
        f"{r.run_dir}: replayed {r.sent_points} points, {r.remaining_points} remain"
        + (f", run ended as {r.ended_with}" if r.ended_with else "")
        + (f" ({r.problem})" if r.problem else "")
        for r in reports
    ] or ["no run folder has spooled metric points"]
    remaining = sum(r.remaining_points for r in reports)
    unfinished = [r for r in reports if r.remaining_points or r.problem]
    payload: dict[str, Any] = {
        "runs": [
            {
                "run_dir": str(r.run_dir),
                "replayed_points": r.sent_points,
                "remaining_points": r.remaining_points,
                "ended_with": r.ended_with,
                "problem": r.problem,
            }
            for r in reports
        ],
        "replayed_points": sum(r.sent_points for r in reports),
        "remaining_points": remaining,
    }
    emit(lines, payload, args.json)
    return EXIT_SOMETHING_REMAINS if unfinished else 0


def _default_output_dir(args: argparse.Namespace) -> Path:
    from visionops.config import TrainConfig, resolve_config

    overrides = config_overrides(args, ["output_dir"])
    return resolve_config(TrainConfig(), overrides).checkpoint.output_dir


def _spooled_run_dirs(output_dir: Path) -> list[Path]:
    from visionops.tracking.spool import MetricSpool, spool_folder

    if not output_dir.is_dir():
        return []
    return sorted(d for d in output_dir.iterdir() if not MetricSpool(spool_folder(d)).is_empty())
