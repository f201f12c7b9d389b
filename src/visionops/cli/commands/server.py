"""``visionops server start|stop|status``: the team tracking server on this machine."""

from __future__ import annotations

import argparse
from typing import Any

from visionops.cli.output import add_json_flag, emit


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    server = subparsers.add_parser(
        "server",
        help="run the team tracking server (mlflow server, PostgreSQL, S3, basic-auth)",
        description="Settings come from VISIONOPS_SERVER_*/VISIONOPS_* variables and .env; see "
        "docs/team-server.md.",
    )
    actions = server.add_subparsers(dest="server_command", required=True, metavar="COMMAND")
    start = actions.add_parser(
        "start",
        help="create the databases and bucket if missing, start the server",
        description="Start the server and stay in the foreground until Ctrl-C, or with --detach "
        "return once it answers (stop it with `visionops server stop`).",
    )
    start.add_argument("--detach", action="store_true", help="run in the background")
    start.add_argument(
        "--local-s3-port",
        type=int,
        metavar="PORT",
        help="also serve the S3 API on this loopback port (moto, in memory: an S3/MinIO stand-in "
        "for trying the stack; artifacts are lost when it stops) and keep artifacts there",
    )
    add_json_flag(start)
    add_json_flag(actions.add_parser("stop", help="stop the server started with --detach"))
    add_json_flag(actions.add_parser("status", help="whether the server runs and answers"))
    server.set_defaults(func=cmd_server)


def cmd_server(args: argparse.Namespace) -> int:
    from visionops.server.control import stack_status, start_stack, stop_stack
    from visionops.server.settings import ServerSettings

    settings = ServerSettings.from_env()
    if args.server_command == "status":
        server = stack_status(settings)
        state = f"running, process group {server.pid}" if server else "stopped"
        payload: dict[str, Any] = {
            "url": settings.url,
            "pid": server.pid if server else None,
            "running": server is not None,
        }
        emit([f"{settings.url}: {state}"], payload, args.json)
        return 0 if server else 1
    if args.server_command == "stop":
        pid = stop_stack(settings)
        if pid is None:
            line = f"no server started from {settings.state_dir} or answering at {settings.url}"
            emit([line], {"stopped": False}, args.json)
        else:
            line = f"stopped the server (process group {pid})"
            emit([line], {"stopped": True, "pid": pid}, args.json)
        return 0

    stack = start_stack(settings, detach=args.detach, local_s3_port=args.local_s3_port)
    lines = [
        f"tracking server at {stack.settings.url} (pid {stack.server.pid})",
        f"  tracking store: {settings.database_uri(settings.tracking_db)}",
        f"  auth store:     {settings.database_uri(settings.auth_db)}",
        f"  artifacts:      {stack.artifacts}",
        f"  log:            {stack.server.log_path if args.detach else 'this terminal'}",
    ]
    emit(lines, {"url": settings.url, "pid": stack.server.pid}, args.json)
    return 0 if args.detach else stack.wait()
