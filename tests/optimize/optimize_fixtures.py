"""What the optimisation tests share: the tiny source model and a context built from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from visionops.config import TrainConfig
from visionops.optimize.method import OptimizeContext, OptimizeOptions

SOURCE_NAME = "tiny-clf"


@dataclass(frozen=True)
class TrainedSource:
    tracking_uri: str
    model_uri: str  # models:/tiny-clf/1
    config: TrainConfig
    val_accuracy: float
    root: Path


def make_context(source: TrainedSource, workdir: Path, **options: object) -> OptimizeContext:
    from visionops.optimize.source import build_context

    settings = {"methods": (), "calibration_images": 64, "finetune_epochs": 1, **options}
    return build_context(
        source.model_uri,
        OptimizeOptions.model_validate(settings),
        workdir,
        source.tracking_uri,
        experiment="optimize-tests",
    )
