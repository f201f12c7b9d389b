"""Printing results: readable lines, or one JSON object as the last line of stdout."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import Any


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json`` for a command whose result ``emit`` prints."""
    parser.add_argument(
        "--json",
        action="store_true",
        default=False,
        help="print one JSON object as the last line of stdout",
    )


def emit(lines: Iterable[str], payload: dict[str, Any], as_json: bool) -> None:
    for line in lines:
        print(line)
    if as_json:
        print(json.dumps(payload, default=str))


def mlflow_ui_hint() -> str:
    """How to look at the runs of the current tracking URI."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"
