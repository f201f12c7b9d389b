"""``visionops server start|stop|status``: the team tracking server on this machine."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from visionops.cli.output import add_json_flag, emit


def add_parsers(commands: argparse._SubParsersAction) -> None:
    server = commands.add_parser(
        "server",
        help="run the team tracking server (mlflow server, PostgreSQL, S3, basic-auth)",
        description="Settings come from VISIONOPS_SERVER_*/VISIONOPS_* variables and .env; see "
        "the README, 'Team server'.",
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


def cmd_server(args: argparse.Namespace) -> int:
    from visionops.server.process import running_server, start_local_s3, start_server
    from visionops.server.settings import ServerConfigError, ServerSettings

    settings = ServerSettings.from_env()
    if args.server_command == "status":
        server = running_server(settings)
        payload: dict[str, Any] = {
            "url": settings.url,
            "pid": server.pid if server else None,
            "running": server is not None,
        }
        emit(
            [f"{settings.url}: {'running, pid ' + str(server.pid) if server else 'stopped'}"],
            payload,
            args.json,
        )
        return 0 if server else 1
    if args.server_command == "stop":
        server = running_server(settings)
        local_s3 = running_server(settings, "s3")
        if local_s3 is not None:  # started by --local-s3-port with --detach
            local_s3.stop()
        if server is None:
            emit(
                [f"no server started from {settings.state_dir} is running"],
                {"stopped": False},
                args.json,
            )
            return 0
        server.stop()
        emit(
            [f"stopped the server (pid {server.pid})"],
            {"stopped": True, "pid": server.pid},
            args.json,
        )
        return 0

    if running_server(settings) is not None:
        raise ServerConfigError(f"a server started from {settings.state_dir} already runs")
    env: dict[str, str] = {}
    local_s3 = None
    if args.local_s3_port:
        local_s3 = start_local_s3("127.0.0.1", args.local_s3_port, settings.state_dir / "s3.log")
        (settings.state_dir / "s3.pid").write_text(str(local_s3.pid))
        env = {"MLFLOW_S3_ENDPOINT_URL": local_s3.url}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.setdefault(key, "local-s3")
        if settings.artifacts_destination is None:
            settings = settings.model_copy(
                update={"artifacts_destination": "s3://mlflow-artifacts"}
            )
    try:
        server = start_server(settings, foreground=not args.detach, env=env)
    except BaseException:
        if local_s3:
            local_s3.stop()
        raise
    lines = [
        f"tracking server at {settings.url} (pid {server.pid})",
        f"  tracking store: {settings.database_uri(settings.tracking_db)}",
        f"  auth store:     {settings.database_uri(settings.auth_db)}",
        f"  artifacts:      {settings.resolved_artifacts_destination(env)}",
        f"  log:            {server.log_path if args.detach else 'this terminal'}",
    ]
    emit(lines, {"url": settings.url, "pid": server.pid}, args.json)
    if args.detach:
        return 0
    # Foreground: wait for Ctrl-C or SIGTERM, then stop the server (and the local S3).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        assert server.popen is not None
        return server.popen.wait()
    except (KeyboardInterrupt, SystemExit):
        return 0
    finally:
        server.stop()
        if local_s3:
            local_s3.stop()


COMMANDS = {"server": cmd_server}
