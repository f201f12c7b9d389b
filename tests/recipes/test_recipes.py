from __future__ import annotations

import pytest

from visionops import names
from visionops.config import TrainConfig, with_fields
from visionops.recipes import get_recipe, list_recipes
from visionops.training import train


@pytest.mark.parametrize("name", [r.name for r in list_recipes()])
def test_every_recipe_is_a_valid_config(name: str) -> None:
    cfg = get_recipe(name)
    assert isinstance(cfg, TrainConfig)
    assert TrainConfig.model_validate(cfg.model_dump()) == cfg


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
