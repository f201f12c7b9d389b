"""``visionops serve``: a registered model over HTTP (flags generated from ``ServeConfig``)."""

from __future__ import annotations

import argparse
import types
from typing import Any, Literal, Union, get_args, get_origin


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from visionops.serving.settings import ServeConfig

    serve = subparsers.add_parser(
        "serve",
        help="serve a registered model over HTTP (dynamic batching, Open Inference Protocol)",
        description="Serve MODEL_URI with dynamic batching: POST /v1/predict (multipart or "
        "JSON base64), the Open Inference Protocol under /v2, Prometheus metrics at /metrics, "
        "OpenAPI at /docs and an upload page at /. An alias is followed as it moves. See "
        "docs/serving.md.",
    )
    for name, field in ServeConfig.model_fields.items():
        required = field.is_required()
        default = None if required else field.default
        kind = _value_type(field.annotation)
        typed: dict[str, Any] = (
            {"choices": get_args(kind)} if get_origin(kind) is Literal else {"type": kind}
        )
        suffix = "" if required or default is None else f" [default: {default}]"
        serve.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            required=required,
            default=default,
            help=f"{field.description}{suffix}",
            **typed,
        )
    serve.set_defaults(func=cmd_serve)


def _value_type(annotation: Any) -> Any:
    """``int`` for ``int | None``; a Literal or a plain type as it is."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    return annotation


def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from visionops import env
    from visionops.errors import ConfigError
    from visionops.serving.model import resolve_alias
    from visionops.serving.server import serve
    from visionops.serving.settings import ServeConfig
    from visionops.tracking.connection import check_command_server

    values = {name: getattr(args, name) for name in ServeConfig.model_fields}
    try:
        config = ServeConfig(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["loc"]:
            message = f"--{str(first['loc'][0]).replace('_', '-')}: {message}"
        raise ConfigError(f"invalid serve option: {message}") from exc
    # The reload loop (in every worker: they inherit it) notices a tracking server that is
    # down within seconds and keeps serving, rather than spending minutes in MLflow's retries.
    env.set_short_retry_policy()
    # One line for a server that is down or refuses the login, not "has no alias".
    args.tracking_server = check_command_server(config.tracking_uri)
    if config.alias is not None:  # fail fast, before the server starts, on a missing alias
        resolve_alias(config.model_name, config.alias, config.tracking_uri)
    serve(config)
    return 0
