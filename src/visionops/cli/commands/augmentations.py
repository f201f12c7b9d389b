"""``visionops augmentations``: the training augmentations, and the loaders that apply each."""

from __future__ import annotations

import argparse
from typing import Any

from visionops.cli.output import add_json_flag, columns, emit


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    augmentations = subparsers.add_parser("augmentations", help="list the training augmentations")
    add_json_flag(augmentations)
    augmentations.set_defaults(func=cmd_augmentations)


def cmd_augmentations(args: argparse.Namespace) -> int:
    from visionops.data.transforms import augmentation_specs

    specs = augmentation_specs()

    def loaders(spec: Any) -> list[str]:
        if not spec.image_stage:
            return ["device", "classic"]
        return [
            name for name, impl in (("device", spec.batched), ("classic", spec.per_image)) if impl
        ]

    payload = {
        "augmentations": [
            {
                "name": s.name,
                "description": s.description,
                "stage": "image" if s.image_stage else "batch",
                "loaders": loaders(s),
            }
            for s in specs
        ]
    }
    emit(columns((s.name, "+".join(loaders(s)), s.description) for s in specs), payload, args.json)
    return 0
