"""Named recipes: functions that return a complete ``TrainConfig``.

Recipes are code, listed by ``visionops recipes`` and chosen with ``--recipe NAME``; CLI
flags, ``VISIONOPS_*`` variables and overrides files still apply on top. Nothing in the core
imports this package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from visionops._registry import Registry
from visionops.config import TrainConfig

RecipeFactory = Callable[[], TrainConfig]


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    factory: RecipeFactory


RECIPES: Registry[Recipe] = Registry("recipe")


def recipe(name: str, description: str) -> Callable[[RecipeFactory], RecipeFactory]:
    """Register the decorated function as the recipe ``name``."""

    def decorate(factory: RecipeFactory) -> RecipeFactory:
        RECIPES.register(name, Recipe(name, description, factory))
        return factory

    return decorate


def list_recipes() -> list[Recipe]:
    return RECIPES.entries()


def get_recipe(name: str) -> TrainConfig:
    return RECIPES.get(name).factory()


from visionops.recipes import basic, cifar10  # noqa: E402, F401  (registers the recipes)
