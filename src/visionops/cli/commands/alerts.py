"""``visionops alerts receive``: Alertmanager's rollback alerts move a registry alias back."""

from __future__ import annotations

import argparse
from pathlib import Path

from visionops import names

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9095


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    alerts = subparsers.add_parser("alerts", help="act on Alertmanager alerts")
    alerts_commands = alerts.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    receive = alerts_commands.add_parser(
        "receive",
        help="an Alertmanager webhook receiver that rolls a registry alias back",
        description="Serve POST /alerts for Alertmanager's webhook: a firing alert labelled "
        f'{names.ALERT_ACTION_LABEL}="{names.ALERT_ACTION_ROLLBACK}", '
        f"{names.ALERT_MODEL_NAME_LABEL} and {names.ALERT_MODEL_VERSION_LABEL} whose version "
        "holds ALIAS rolls ALIAS back to its previous holder and is recorded on the version. "
        "Every request needs the bearer token, from VISIONOPS_ALERTS_TOKEN or --token-file. "
        "See docs/registry.md.",
    )
    receive.add_argument(
        "--alias",
        default=names.PRODUCTION_ALIAS,
        help=f"the alias alerts roll back [default: {names.PRODUCTION_ALIAS}]",
    )
    receive.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on [default: {DEFAULT_HOST}]"
    )
    receive.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port [default: {DEFAULT_PORT}]"
    )
    receive.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)"
    )
    receive.add_argument(
        "--token-file",
        metavar="FILE",
        help="a file holding the bearer token (instead of VISIONOPS_ALERTS_TOKEN)",
    )
    alerts.set_defaults(func=cmd_alerts)


def cmd_alerts(args: argparse.Namespace) -> int:
    from visionops import env
    from visionops.tracking.connection import check_command_server

    token = _token(args.token_file)  # before anything else: no token, no server
    env.set_short_retry_policy()  # a notification is answered in seconds, server down or not
    args.tracking_server = check_command_server(args.tracking_uri)
    from visionops.monitoring.alerts import AlertRollback
    from visionops.monitoring.receiver import serve_receiver

    handler = AlertRollback(args.alias, args.tracking_server)
    serve_receiver(handler, token, args.host, args.port)
    return 0


def _token(token_file: str | None) -> str:
    from visionops import env
    from visionops.errors import ConfigError

    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {token_file}: cannot read it ({exc})") from exc
        if not token:
            raise ConfigError(f"--token-file {token_file} is empty; put the bearer token in it")
        return token
    token = (env.ALERTS_TOKEN.get() or "").strip()
    if not token:
        raise ConfigError(
            f"no bearer token: set {env.ALERTS_TOKEN.name} or pass --token-file FILE (the token "
            "Alertmanager sends as http_config.authorization.credentials)"
        )
    return token
