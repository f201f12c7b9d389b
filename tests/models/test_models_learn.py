"""Every registered model learns the synthetic data within its first epoch.

One short ``train(cfg)`` per model (new models are covered by default): 2,400 synthetic images
at 16x16 pixels (the textures read the same at any size, and a quarter of the pixels keeps
full-width ResNet-18 near 25 s on 2 CPU cores), batch 32 at a peak rate of 0.05, 2 epochs,
quarter width where a model has a width option.
"""

from __future__ import annotations

import pytest

from visionops import names
from visionops.config import TrainConfig, with_fields
from visionops.models import model_specs
from visionops.training import EpochEnd, train

# Models without a width option train at full width: 10 to 25 s each.
MODEL_CASES = [
    pytest.param(
        spec.name, spec.supports_width, marks=() if spec.supports_width else [pytest.mark.slow]
    )
    for spec in model_specs()
]


@pytest.mark.parametrize(("name", "supports_width"), MODEL_CASES)
def test_the_model_learns_within_its_first_epoch(
    name: str, supports_width: bool, tiny_config: TrainConfig
) -> None:
    width = 0.25 if supports_width else 1.0
    cfg = with_fields(
        tiny_config,
        model=name,
        width_multiplier=width,
        synthetic_size=2400,
        image_size=16,
        epochs=2,
        batch_size=32,
        eval_batch_size=240,
        lr=0.05,
        warmup_epochs=0.6,
        log_every_n_steps=50,
        log_model=False,
    )
    epochs: list[EpochEnd] = []
    result = train(cfg, on_epoch_end=epochs.append)

    # Chance is 0.1. The first epoch's running training accuracy starts there, so 0.15 over
    # the whole epoch means the last batches were well above it.
    assert epochs[0].metrics[names.TRAIN_ACCURACY] >= 0.15
    # 240 validation images: chance scores 0.10 +- 0.02.
    assert epochs[0].metrics[names.VAL_ACCURACY] >= 0.2
    assert result.metrics[names.VAL_ACCURACY] >= 0.5
