"""The built-in recipes: defaults, the quickstart and a tiny debug run for smoke tests."""

from __future__ import annotations

from visionops.config import DataConfig, ModelConfig, OptimConfig, TrackingConfig, TrainConfig
from visionops.recipes import recipe


@recipe("default", "The configuration defaults: ResNet-18 (32x32 stem) on CIFAR-10.")
def default() -> TrainConfig:
    return TrainConfig()


@recipe(
    "quickstart",
    "Quarter-width ResNet-9 on the synthetic dataset, registered as vision-classifier "
    "(one to two minutes on 2 CPU cores).",
)
def quickstart() -> TrainConfig:
    return TrainConfig(
        epochs=4,
        data=DataConfig(dataset="synthetic", synthetic_size=12000, batch_size=128),
        model=ModelConfig(name="resnet9", width_multiplier=0.25),
        # The default optimiser: the synthetic textures need no tuned rate to converge.
        tracking=TrackingConfig(register_as="vision-classifier"),
    )


@recipe("debug", "A tiny model on a small synthetic set: seconds per run, for smoke tests.")
def debug() -> TrainConfig:
    return TrainConfig(
        epochs=2,
        data=DataConfig(
            dataset="synthetic", synthetic_size=400, batch_size=32, eval_batch_size=100
        ),
        model=ModelConfig(name="resnet9", width_multiplier=0.125),
        optim=OptimConfig(lr=0.05, warmup_fraction=0.25),  # 0.5 of its 2 epochs
        tracking=TrackingConfig(log_every_n_steps=2, system_metrics=False),
    )
