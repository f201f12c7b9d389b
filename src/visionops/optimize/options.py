"""The options of ``visionops optimize`` (no heavy imports: the CLI parser reads the defaults)."""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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


def _every_core() -> tuple[int, ...]:
    return tuple(sorted({1, os.cpu_count() or 1}))


class OptimizeOptions(BaseModel):
    """The knobs of ``visionops optimize`` (each is a flag of the same name).

    Their ranges are here alone: the command line is validated by this schema
    (``visionops.config.model_from_flags``), before anything is built.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    methods: tuple[str, ...]
    calibration_images: int = Field(512, ge=MIN_CALIBRATION_IMAGES)
    calibration_method: CalibrationMethod = "minmax"
    finetune_epochs: int = Field(2, ge=1)
    #: Fine-tuning's peak learning rate as a fraction of the source run's.
    finetune_lr_fraction: float = Field(0.1, gt=0, le=1)
    prune_ratio: float = Field(0.5, gt=0, lt=1)
    opset: int = Field(18, ge=1)
    select_for_latency_ms: float | None = Field(None, gt=0)
    latency_runs: int = Field(100, ge=1)  # timed batch-1 passes per variant and thread count
    throughput_batches: int = Field(10, ge=1)  # timed batch-64 passes per variant and thread count
    threads: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        default_factory=_every_core, min_length=1
    )

    @field_validator("threads")
    @classmethod
    def _each_count_once(cls, threads: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(set(threads)))
