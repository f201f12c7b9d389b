"""The flags that name a registered model, shared by the commands that work on one.

``promote``, ``rollback`` and ``alias set`` take ``--model`` and ``--alias``; ``optimize`` and
``export`` take ``--model-uri`` and the data overrides the model is measured on.
"""

from __future__ import annotations

import argparse

from visionops.cli.output import add_json_flag
from visionops.config import Override, overrides_from_mapping


def add_model_and_alias(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered model name")
    parser.add_argument("--alias", required=True, help="alias, e.g. production or staging")


def add_tracking_and_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    add_json_flag(parser)


def add_model_uri_and_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-uri",
        required=True,
        help="registered model: models:/NAME/VERSION or models:/NAME/ALIAS",
    )
    parser.add_argument("--dataset", help="override the training run's dataset")
    parser.add_argument("--data-dir", help="override the training run's data folder")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")


def data_overrides(args: argparse.Namespace) -> list[Override]:
    """The overrides of the model's training data that ``add_model_uri_and_data``'s flags set."""
    values = {"dataset": args.dataset, "data_dir": args.data_dir}
    return overrides_from_mapping({k: v for k, v in values.items() if v}, "command line")
