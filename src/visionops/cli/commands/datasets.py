"""``visionops datasets``: the datasets ``--dataset`` accepts, and whether each can be cached."""

from __future__ import annotations

import argparse

from visionops.cli.output import add_json_flag, columns, emit


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    datasets = subparsers.add_parser("datasets", help="list the datasets --dataset accepts")
    add_json_flag(datasets)
    datasets.set_defaults(func=cmd_datasets)


def cmd_datasets(args: argparse.Namespace) -> int:
    from visionops.data.datasets import DATASETS

    specs = DATASETS.entries()
    payload = {
        "datasets": [
            {"name": s.name, "description": s.description, "cacheable": s.cacheable} for s in specs
        ]
    }
    emit(columns((s.name, s.description) for s in specs), payload, args.json)
    return 0
