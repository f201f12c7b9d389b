"""A password in a tracking URI goes to MLflow's variables at the command's start, nowhere else.

``visionops train --tracking-uri http://editor:PASSWORD@host:5000`` works as MLflow does with
such a URI, but the command, and everything it starts, sees ``http://host:5000`` and logs in
with ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, set for this process and its
children (torchrun and local Ray workers inherit them). So the URI that is saved (config.yaml,
checkpoints, a sweep's state file), logged as a param, printed ("View run ...") or sent to Ray
workers holds no password, and a bare ``--resume`` logs in with the caller's environment.

Precedence is MLflow's own: when both variables are already set (the environment, ``.env``),
they win and the URI's user info is dropped with a warning, as MLflow would have sent them.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import MutableMapping

from visionops import env
from visionops.config import TrainConfig, split_url_credentials, with_run_options

logger = logging.getLogger(__name__)

#: The variables that may hold a tracking URI, after the command's own flag.
_URI_VARIABLES = (env.config_env_var("tracking_uri"), env.MLFLOW_TRACKING_URI.name)


def move_credentials(uri: str, environ: MutableMapping[str, str], source: str) -> str:
    """``uri`` without user info; its user name and password go to ``environ`` as MLflow's
    variables unless both are set already (``source`` names the URI in the warning)."""
    bare, username, password = split_url_credentials(uri)
    if password is None:  # no password (or a saved ***): nothing to log in with
        return bare
    user_var, password_var = env.MLFLOW_TRACKING_USERNAME, env.MLFLOW_TRACKING_PASSWORD
    if user_var.is_set(environ) and password_var.is_set(environ):
        if (user_var.get(environ), password_var.get(environ)) != (username or "", password):
            logger.warning(
                "the user name and password in %s are not used: %s and %s are set and win",
                source,
                user_var.name,
                password_var.name,
            )
        return bare
    environ[user_var.name] = username or ""
    environ[password_var.name] = password
    return bare


def move_command_credentials(args: argparse.Namespace, environ: MutableMapping[str, str]) -> None:
    """Move the credentials of the command's ``--tracking-uri`` and of the variables that
    hold a tracking URI into ``environ`` (the flag's first), leaving the URIs without them.

    The command line handed to torchrun's workers (``args.argv``) gets the bare URI too."""
    flag_uri = getattr(args, "tracking_uri", None)
    if isinstance(flag_uri, str):
        args.tracking_uri = move_credentials(flag_uri, environ, "--tracking-uri")
        if args.tracking_uri != flag_uri and hasattr(args, "argv"):
            args.argv = [arg.replace(flag_uri, args.tracking_uri) for arg in args.argv]
    for name in _URI_VARIABLES:
        if environ.get(name):
            environ[name] = move_credentials(environ[name], environ, name)


def config_without_credentials(cfg: TrainConfig, environ: MutableMapping[str, str]) -> TrainConfig:
    """``cfg`` with a tracking URI that holds no credentials; they go to ``environ`` (a URI
    from an overrides file, or from a run saved before passwords were kept out of it)."""
    uri = cfg.tracking.tracking_uri
    if uri is None:
        return cfg
    bare = move_credentials(uri, environ, "tracking_uri")
    return cfg if bare == uri else with_run_options(cfg, tracking_uri=bare)
