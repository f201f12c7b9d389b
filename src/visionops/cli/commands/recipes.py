"""``visionops recipes``: the named training recipes (what ``--recipe`` accepts)."""

from __future__ import annotations

import argparse

from visionops.cli.output import add_json_flag, columns, emit


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    recipes = subparsers.add_parser("recipes", help="list the named training recipes")
    add_json_flag(recipes)
    recipes.set_defaults(func=cmd_recipes)


def cmd_recipes(args: argparse.Namespace) -> int:
    from visionops.recipes import list_recipes

    recipes = list_recipes()
    payload = {"recipes": [{"name": r.name, "description": r.description} for r in recipes]}
    emit(columns((r.name, r.description) for r in recipes), payload, args.json)
    return 0
