"""Named recipes: functions that return a complete ``TrainConfig``.

Recipes are code, listed by ``visionops recipes`` and chosen with ``--recipe NAME``; CLI
flags, ``VISIONOPS_*`` variables and overrides files still apply on top. Nothing in the core
imports this package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from visionops.config import TrainConfig
from visionops.errors import ConfigError

RecipeFactory = Callable[[], TrainConfig]


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    factory: RecipeFactory


_RECIPES: dict[str, Recipe] = {}


def recipe(name: str, description: str) -> Callable[[RecipeFactory], RecipeFactory]:
    def decorate(factory: RecipeFactory) -> RecipeFactory:
        _RECIPES[name] = Recipe(name, description, factory)
        return factory

    return decorate


def list_recipes() -> list[Recipe]:
    return [_RECIPES[name] for name in sorted(_RECIPES)]


def get_recipe(name: str) -> TrainConfig:
    if name not in _RECIPES:
        raise ConfigError(
            f"unknown recipe {name!r}; available recipes: {', '.join(sorted(_RECIPES))}"
        )
    return _RECIPES[name].factory()


from visionops.recipes import basic, cifar10  # noqa: E402, F401  (registers the recipes)
