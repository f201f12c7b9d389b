from __future__ import annotations

import pytest

from visionops.config import TrainConfig, warmup_epochs_for, with_fields
from visionops.recipes import get_recipe, list_recipes


@pytest.mark.parametrize("name", [r.name for r in list_recipes()])
def test_every_recipe_is_a_valid_config(name: str) -> None:
    cfg = get_recipe(name)
    assert isinstance(cfg, TrainConfig)
    assert TrainConfig.model_validate(cfg.model_dump()) == cfg


@pytest.mark.parametrize("name", [r.name for r in list_recipes()])
@pytest.mark.parametrize("epochs", [1, 2, 4])
def test_every_recipe_takes_any_number_of_epochs(name: str, epochs: int) -> None:
    # A recipe's warm-up is a share of the run (or the default), never a fixed length that a
    # shorter run (--epochs 1, a sweep's --max-epochs) would have to be refused for.
    recipe = get_recipe(name)
    cfg = with_fields(recipe, "--epochs", epochs=epochs)
    warmup = warmup_epochs_for(cfg.optim, epochs)
    assert 0 <= warmup < epochs
    if recipe.optim.warmup_fraction is not None:  # the recipe's share of the run, kept
        assert warmup == pytest.approx(recipe.optim.warmup_fraction * epochs)
