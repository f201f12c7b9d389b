"""Printing results: readable lines, or one JSON object as the last line of stdout."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from visionops.training import TrainResult


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


def mlflow_ui_hint(uri: str) -> str:
    """How to look at the runs of tracking URI ``uri``."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"


def emit_train_result(
    result: TrainResult,
    register_as: str | None,
    as_json: bool,
    tracking_uri: str,
    extra_payload: dict[str, Any] | None = None,
    extra_lines: Sequence[str] = (),
) -> None:
    """Print what ``visionops train`` trained, however many processes it took."""
    registered = result.registered_version is not None
    payload: dict[str, Any] = {
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        "registered_model": (
            {"name": register_as, "version": result.registered_version} if registered else None
        ),
        "metrics": result.metrics,
        "run_dir": str(result.run_dir),
        "epochs": result.epochs_completed,
        **(extra_payload or {}),
    }
    lines = [
        f"run id:      {result.run_id}",
        f"model uri:   {result.model_uri}",
        *(
            [f"registered:  {register_as} version {result.registered_version}"]
            if registered
            else []
        ),
        *(f"{name:<12} {value:.4f}" for name, value in result.metrics.items()),
        f"run folder:  {result.run_dir}",
        *extra_lines,
        f"MLflow UI:   {mlflow_ui_hint(tracking_uri)}",
    ]
    emit(lines, payload, as_json)
