from __future__ import annotations

import pytest

from visionops import names
from visionops.config import TrainConfig, warmup_epochs_for, with_fields
from visionops.recipes import get_recipe, list_recipes
from visionops.training import train


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


@pytest.mark.integration
@pytest.mark.slow
def test_quickstart_reaches_90_percent_validation_accuracy(tracking_uri: str, tmp_path) -> None:
    cfg = with_fields(
        get_recipe("quickstart"),
        tracking_uri=tracking_uri,
        output_dir=str(tmp_path / "outputs"),
        system_metrics=False,
    )
    result = train(cfg)
    assert result.metrics[names.VAL_ACCURACY] >= 0.90
    assert result.registered_version == 1
