"""``Registry``, and every registry of the package built on it with the same rules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from visionops._registry import Registry
from visionops.config import DataConfig
from visionops.data import build_data
from visionops.data.cache import decoded_source
from visionops.data.datasets import DATASETS, register_dataset
from visionops.data.transforms import AUGMENTATIONS, get_augmentation, register_augmentation
from visionops.errors import ConfigError
from visionops.models import MODELS, create_model, register_model
from visionops.recipes import RECIPES, get_recipe, recipe
from visionops.tuning.algorithms import (
    SCHEDULER_NAMES,
    SCHEDULERS,
    SEARCH_NAMES,
    SEARCHERS,
    create_scheduler,
    create_searcher,
)
from visionops.tuning.space import SEARCH_SPACES, create_search_space

# --------------------------------------------------------------------------- Registry


def test_register_returns_the_entry_and_get_finds_it() -> None:
    colours: Registry[str] = Registry("colour")
    assert colours.register("red", "#f00") == "#f00"
    assert colours.get("red") == "#f00"
    assert "red" in colours and "blue" not in colours
    assert len(colours) == 1


def test_the_decorator_form_registers_what_it_decorates() -> None:
    greetings: Registry[Callable[[str], str]] = Registry("greeting")

    @greetings.register("hello")
    def hello(name: str) -> str:
        return f"hello {name}"

    assert hello("Ada") == "hello Ada"  # the decorated function is returned unchanged
    assert greetings.get("hello") is hello


def test_names_entries_and_items_are_sorted_by_name() -> None:
    numbers: Registry[int] = Registry("number")
    for name, value in (("two", 2), ("three", 3), ("one", 1)):
        numbers.register(name, value)
    assert numbers.names() == ["one", "three", "two"]
    assert numbers.entries() == [1, 3, 2]
    assert numbers.items() == [("one", 1), ("three", 3), ("two", 2)]


def test_a_name_registered_twice_is_a_developer_error() -> None:
    numbers: Registry[int] = Registry("number")
    numbers.register("one", 1)
    with pytest.raises(ValueError, match=r"^number 'one' is registered twice$"):
        numbers.register("one", 11)
    with pytest.raises(ValueError, match="registered twice"):
        numbers.register("one")(111)
    assert numbers.get("one") == 1  # the first registration stands


def test_an_unknown_name_is_a_user_error_listing_the_known_names() -> None:
    numbers: Registry[int] = Registry("number")
    numbers.register("two", 2)
    numbers.register("one", 1)
    with pytest.raises(ConfigError) as info:
        numbers.get("three")
    assert str(info.value) == "unknown number 'three'; known: one, two"
    assert info.value.__cause__ is None and info.value.__suppress_context__


# --------------------------------------------------------------------------- every registry

REGISTRIES: dict[str, Registry[Any]] = {
    "model": MODELS,
    "augmentation": AUGMENTATIONS,
    "dataset": DATASETS,
    "recipe": RECIPES,
    "search space": SEARCH_SPACES,
    "search algorithm": SEARCHERS,
    "trial scheduler": SCHEDULERS,
}


def _unknown(kind: str) -> str:
    return f"unknown {kind} 'no-such-name'; known: {', '.join(REGISTRIES[kind].names())}"


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_registry_is_a_registry_of_its_kind(kind: str) -> None:
    registry = REGISTRIES[kind]
    assert isinstance(registry, Registry)
    assert registry.kind == kind
    assert registry.names(), f"no {kind} is registered"


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_registry_refuses_a_name_twice(kind: str) -> None:
    registry = REGISTRIES[kind]
    name, entry = registry.items()[0]
    with pytest.raises(ValueError, match=rf"^{kind} {name!r} is registered twice$"):
        registry.register(name, entry)


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_every_registry_words_an_unknown_name_alike(kind: str) -> None:
    with pytest.raises(ConfigError) as info:
        REGISTRIES[kind].get("no-such-name")
    assert str(info.value) == _unknown(kind)


# The public helpers of each registry go through it: same error text, same duplicate rule.
LOOKUPS: list[tuple[str, Callable[[], object]]] = [
    ("model", lambda: create_model("no-such-name", num_classes=10)),
    ("augmentation", lambda: get_augmentation("no-such-name")),
    ("dataset", lambda: build_data(DataConfig(dataset="no-such-name"), seed=0)),
    ("dataset", lambda: decoded_source(DataConfig(dataset="no-such-name"))),
    ("recipe", lambda: get_recipe("no-such-name")),
    ("search space", lambda: create_search_space("no-such-name")),
    ("search algorithm", lambda: create_searcher("no-such-name", max_concurrent=1)),
    ("trial scheduler", lambda: create_scheduler("no-such-name", 4, 1, 2, Path("sweep"))),
]


@pytest.mark.parametrize(
    ("kind", "lookup"), LOOKUPS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(LOOKUPS)]
)
def test_public_lookups_raise_the_registry_error(kind: str, lookup: Callable[[], object]) -> None:
    with pytest.raises(ConfigError) as info:
        lookup()
    assert str(info.value) == _unknown(kind)


REGISTRATIONS: list[tuple[str, Callable[[], object]]] = [
    ("model", lambda: register_model("resnet9", "again")(lambda **kwargs: None)),
    ("augmentation", lambda: register_augmentation(get_augmentation("cutout"))),
    ("dataset", lambda: register_dataset(DATASETS.get("synthetic"))),
    ("recipe", lambda: recipe("debug", "again")(lambda: get_recipe("debug"))),
]


@pytest.mark.parametrize(("kind", "register"), REGISTRATIONS, ids=[k for k, _ in REGISTRATIONS])
def test_public_registration_refuses_a_name_twice(
    kind: str, register: Callable[[], object]
) -> None:
    before = REGISTRIES[kind].items()
    with pytest.raises(ValueError, match=rf"^{kind} '[\w-]+' is registered twice$"):
        register()
    assert REGISTRIES[kind].items() == before


def test_the_sweep_options_accept_the_registered_search_algorithms_and_schedulers() -> None:
    # SweepOptions and the presets type the names as Literals (``tune --help`` lists them in
    # that order); the registries must hold the same names.
    assert sorted(SEARCH_NAMES) == SEARCHERS.names()
    assert sorted(SCHEDULER_NAMES) == SCHEDULERS.names()
