"""The options of ``visionops optimize`` (no heavy imports: the CLI parser reads the defaults)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from visionops.errors import ConfigError

#: What ``visionops optimize`` builds when ``--methods`` is not given.
DEFAULT_METHODS = (
    "onnx",
    "int8-static",
    "int8-dynamic",
    "int8-pt2e",
    "qat",
    "prune-structured",
    "prune-unstructured",
    "openvino",
    "tensorrt",
)

CalibrationMethod = Literal["minmax", "entropy", "percentile"]
#: Fewer calibration images than this give activation ranges that depend on the draw.
MIN_CALIBRATION_IMAGES = 32


@dataclass(frozen=True)
class OptimizeOptions:
    """The knobs of ``visionops optimize`` (each is a flag of the same name)."""

    methods: tuple[str, ...]
    calibration_images: int = 512
    calibration_method: CalibrationMethod = "minmax"
    finetune_epochs: int = 2
    #: Fine-tuning's peak learning rate as a fraction of the source run's.
    finetune_lr_fraction: float = 0.1
    prune_ratio: float = 0.5
    opset: int = 18
    select_for_latency_ms: float | None = None
    latency_runs: int = 100  # timed batch-1 passes per variant and thread count
    throughput_batches: int = 10  # timed batch-64 passes per variant and thread count
    threads: tuple[int, ...] = field(
        default_factory=lambda: tuple(sorted({1, os.cpu_count() or 1}))
    )

    def __post_init__(self) -> None:
        if self.calibration_images < MIN_CALIBRATION_IMAGES:
            raise ConfigError(
                f"--calibration-images {self.calibration_images} is too few: at least "
                f"{MIN_CALIBRATION_IMAGES} are needed for stable activation ranges"
            )
        if self.finetune_epochs < 1:
            raise ConfigError(f"--finetune-epochs must be at least 1, got {self.finetune_epochs}")
        if not 0 < self.prune_ratio < 1:
            raise ConfigError(f"--prune-ratio must be between 0 and 1, got {self.prune_ratio}")
