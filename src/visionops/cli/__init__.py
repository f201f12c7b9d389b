"""The ``visionops`` command line: train, evaluate, tune, models, recipes, augmentations, data.

Usage::

    visionops train --recipe quickstart
    visionops train --model resnet18 --dataset cifar10 --epochs 30 --register-as clf
    visionops train --resume
    visionops tune --preset quick --json
    visionops evaluate --model-uri models:/vision-classifier/1 --split val --json
    visionops data cache --dataset imagefolder --data-dir data/cifar10-jpeg
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence

from visionops.cli.output import json_document_only
from visionops.errors import TrainingInterrupted, VisionOpsError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def load_dotenv_file() -> None:
    """Read ``./.env`` into the environment (variables already set win), so the same command
    logs locally or to the team server depending on the folder's ``.env`` alone."""
    from dotenv import load_dotenv

    load_dotenv(DOTENV_FILE, override=False)


DOTENV_FILE = ".env"


def main(argv: Sequence[str] | None = None) -> int:
    from visionops.cli.parser import build_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # a distributed launcher hands it on to its workers
    load_dotenv_file()
    from visionops import env

    # MLflow reads its log level as it is imported: set before anything imports it. The
    # processes a command starts (serve's workers, torchrun's, Ray's) inherit both.
    env.MLFLOW_ARTIFACTS_PROGRESS_BAR.set_default("false")
    env.MLFLOW_LOGGING_LEVEL.set_default("WARNING")
    # Before anything imports Ray, which reads it then: a local Ray stays on 127.0.0.1.
    env.RAY_ENABLE_CLUSTER.set_default("0")
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("visionops").setLevel(logging.INFO)
    from visionops.cli.credentials import move_command_credentials

    # Before anything reads a tracking URI: from here on none holds a password.
    move_command_credentials(args, os.environ)
    handler: Callable[[argparse.Namespace], int] = args.func  # set by the command's parser
    try:
        with json_document_only(getattr(args, "json", False)):
            return handler(args)
    except TrainingInterrupted as stop:
        from visionops.training.world import world_from_env

        if world_from_env().is_main:  # one message for a distributed job, rank 0's
            print(str(stop), file=sys.stderr)
        return EXIT_INTERRUPTED
    except VisionOpsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        refusal = _tracking_refusal(error, args)
        if refusal is None:
            raise
        print(f"error: {refusal}", file=sys.stderr)
        return EXIT_USER_ERROR


def _tracking_refusal(error: Exception, args: argparse.Namespace) -> Exception | None:
    """The one-line error for an MLflow exception about the tracking server (unreachable, a
    refused login or permission), or None. MLflow is imported only here, once something failed,
    so ``visionops --help`` stays fast."""
    from mlflow.exceptions import MlflowException

    from visionops.tracking.connection import command_tracking_uri, tracking_error

    if not isinstance(error, MlflowException):
        return None
    # The commands that talk to a server note the one they checked (it may come from a config
    # file or VISIONOPS_TRACKING_URI, which only the command resolves).
    server = getattr(args, "tracking_server", None)
    return tracking_error(
        error,
        server or command_tracking_uri(getattr(args, "tracking_uri", None)),
        experiment=getattr(args, "experiment", None),
        model=_registered_model(args),
    )


def _registered_model(args: argparse.Namespace) -> str | None:
    """The registered model a command's flags name, if any (for a 403's grant hint)."""
    # train's --model is an architecture: a command that registers says so with --register-as.
    if hasattr(args, "register_as"):
        return args.register_as or None
    model = getattr(args, "model", None)
    if model:
        return str(model)
    uri = str(getattr(args, "model_uri", None) or "")
    name = re.match(r"models:/([^/@]+)", uri)
    return name.group(1) if name else None
