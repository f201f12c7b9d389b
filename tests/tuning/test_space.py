"""Search spaces: one registered per recipe, overridable field by field from a YAML/JSON file."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.tune.search.sample import Categorical, Float

from visionops.errors import ConfigError
from visionops.recipes import list_recipes
from visionops.tuning.space import (
    SEARCH_SPACES,
    create_search_space,
    describe_space,
    load_space_file,
)


@pytest.mark.parametrize("recipe", [r.name for r in list_recipes()])
def test_every_recipe_has_a_space_of_config_fields(recipe: str) -> None:
    from visionops.config import CONFIG_FIELDS

    space = create_search_space(recipe)
    assert {"lr", "weight_decay", "momentum", "batch_size", "label_smoothing"} <= set(space)
    assert set(space) <= set(CONFIG_FIELDS)
    assert describe_space(space)["lr"].startswith("loguniform")


def test_every_recipe_registers_its_space_by_name() -> None:
    assert SEARCH_SPACES.names() == sorted(r.name for r in list_recipes())


def test_a_recipe_without_a_space_is_refused_not_given_a_default(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("lr: {type: uniform, low: 0.01, high: 0.1}\n")
    for override in (None, path):
        with pytest.raises(ConfigError) as info:
            create_search_space("my-recipe", override)
        assert str(info.value) == (
            f"unknown search space 'my-recipe'; known: {', '.join(SEARCH_SPACES.names())}"
        )


def test_a_file_overrides_and_fixes_fields(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(
        "lr: {type: uniform, low: 0.01, high: 0.1}\n"
        "model: {type: choice, values: [resnet9, airbench]}\n"
        "label_smoothing: 0.1\n"
    )
    space = create_search_space("debug", path)
    assert isinstance(space["lr"], Float) and space["lr"].upper == 0.1
    assert isinstance(space["model"], Categorical)
    assert space["label_smoothing"] == 0.1
    assert isinstance(space["weight_decay"], Float)  # untouched default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate: 0.1\n", "unknown config field 'learning_rate'"),
        ("lr: {type: gaussian, low: 0, high: 1}\n", "accepted types: loguniform"),
        ("lr: {type: uniform, low: 0}\n", "needs exactly the keys low, high"),
        ("model: {type: choice, values: []}\n", "non-empty list"),
        ("- lr\n", "must hold a mapping of config fields"),
    ],
)
def test_a_bad_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_space_file(path)
