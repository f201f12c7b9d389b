"""The ``visionops`` argument parser, built from the one list of command modules.

Each module of ``visionops.cli.commands`` adds its command's parser and sets its handler
(``func``); ``COMMANDS`` lists them in the order ``visionops --help`` shows them.
"""

from __future__ import annotations

import argparse
from types import ModuleType

from visionops.cli.commands import (
    admin,
    alerts,
    alias,
    augmentations,
    data,
    datasets,
    evaluate,
    export,
    models,
    optimize,
    promote,
    recipes,
    rollback,
    serve,
    server,
    tracking,
    train,
    tune,
)

COMMANDS: tuple[ModuleType, ...] = (
    train,
    evaluate,
    models,
    datasets,
    recipes,
    augmentations,
    data,
    server,
    admin,
    promote,
    rollback,
    alias,
    tracking,
    tune,
    optimize,
    export,
    serve,
    alerts,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionops", description="Train, track and ship image classifiers."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser
