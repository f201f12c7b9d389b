"""Printing results: readable lines on stdout, or with ``--json`` one JSON document on stdout
and the readable lines on stderr (as ``gh --json`` and ``kubectl -o json`` keep stdout for the
document alone, so ``visionops ... --json | jq`` reads it)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from visionops.training import TrainResult

#: Where ``emit`` prints the JSON document while ``json_document_only`` holds stdout.
_document: list[TextIO] = []


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """``--json`` for a command whose result ``emit`` prints."""
    parser.add_argument(
        "--json",
        action="store_true",
        default=False,
        help="print one JSON object on stdout, and the readable lines on stderr",
    )


@contextmanager
def json_document_only(as_json: bool) -> Iterator[None]:
    """With ``as_json``, whatever the calls inside print to stdout goes to stderr, and only
    ``emit``'s document to stdout: a library's tables and progress bars (Ray Tune's trial
    tables, say) cannot break the document. Without it, nothing changes."""
    if not as_json:
        yield
        return
    _document.append(sys.stdout)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        _document.pop()


def emit(lines: Iterable[str], payload: dict[str, Any], as_json: bool) -> None:
    """``lines`` on stdout; with ``as_json``, ``payload`` on stdout and ``lines`` on stderr."""
    human = sys.stderr if as_json else sys.stdout
    for line in lines:
        print(line, file=human)
    if as_json:
        print(json.dumps(payload, default=str), file=_document[-1] if _document else sys.stdout)


def columns(rows: Iterable[Sequence[str]], align: str = "", gap: int = 2) -> list[str]:
    """``rows`` as lines whose columns line up, each as wide as its widest cell.

    Args:
        align: one character per column, ``<`` (left) or ``>`` (right); columns beyond it
            are left-aligned. The last column is not padded, so a long description runs on.
        gap: spaces between columns.
    """
    table = [list(row) for row in rows]
    if not table:
        return []
    count = max(len(row) for row in table)
    widths = [max((len(row[i]) for row in table if i < len(row)), default=0) for i in range(count)]
    lines = []
    for row in table:
        cells = []
        for i, cell in enumerate(row):
            last = i == len(row) - 1
            right = i < len(align) and align[i] == ">"
            if right:
                cells.append(cell.rjust(widths[i]))
            else:
                cells.append(cell if last else cell.ljust(widths[i]))
        lines.append((" " * gap).join(cells).rstrip())
    return lines


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
