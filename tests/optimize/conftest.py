"""A small trained model in its own MLflow store, shared by the optimisation tests.

ResNet-9 at quarter width on 16-pixel synthetic textures learns them in a few epochs, so
accuracy comparisons between variants mean something.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from optimize_fixtures import SOURCE_NAME, TrainedSource, make_context

from visionops.config import with_fields
from visionops.optimize.method import OptimizeContext


@pytest.fixture(scope="session")
def trained_source(
    new_tracking_store: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> TrainedSource:
    from visionops.recipes import get_recipe
    from visionops.training import train

    root = tmp_path_factory.mktemp("optimize-source")
    uri = new_tracking_store(root, "mlflow.db")
    cfg = with_fields(
        get_recipe("debug"),
        epochs=3,
        synthetic_size=2400,
        image_size=16,
        batch_size=64,
        width_multiplier=0.25,
        lr=0.1,
        warmup_epochs=None,
        tracking_uri=uri,
        experiment="optimize-tests",
        output_dir=str(root / "outputs"),
        cache_dir=str(root / "cache"),
        register_as=SOURCE_NAME,
    )
    result = train(cfg)
    assert result.registered_version == 1
    return TrainedSource(uri, f"models:/{SOURCE_NAME}/1", cfg, result.metrics["val/accuracy"], root)


@pytest.fixture
def optimize_context(trained_source: TrainedSource, tmp_path: Path) -> OptimizeContext:
    return make_context(trained_source, tmp_path / "optimize")
