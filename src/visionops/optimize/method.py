"""What an optimisation method is, and what it is given to work with.

A method is one registered entry (one file under ``visionops/optimize/methods/``):
``build(ctx) -> list[Variant]`` makes one or more variants of ``ctx.source``. It may raise: the
pipeline turns the error into a "skipped: reason" row and the other methods still run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from visionops._registry import Registry
from visionops.data import DataBundle, split_images
from visionops.errors import ConfigError
from visionops.optimize.export import export_onnx
from visionops.optimize.options import OptimizeOptions
from visionops.optimize.variant import Variant
from visionops.training.model_source import LoggedClassifier


@dataclass
class OptimizeContext:
    """What every method works from: the source model, its data, the options, a folder."""

    source: LoggedClassifier
    source_name: str | None  # registered model name and version, when the URI names them
    source_version: str | None
    data: DataBundle  # the source run's data configuration (with the command's overrides)
    seed: int
    options: OptimizeOptions
    workdir: Path  # variant files are written here
    tracking_uri: str
    parent_run_id: str | None
    #: Fine-tunes ``source`` through ``train(cfg)``: (method, compression) -> (model, run id).
    finetune: Callable[[str, str], tuple[nn.Module, str | None]]

    @property
    def model(self) -> nn.Module:
        """The source model, eager, on the CPU, in eval mode (do not modify it: copy it)."""
        return self.source.module

    def example(self, count: int = 2) -> torch.Tensor:
        return self.calibration_images[:count]

    @cached_property
    def calibration_images(self) -> torch.Tensor:
        """``options.calibration_images`` training images (float32 NCHW in [0, 1], no
        augmentation), drawn with the seed."""
        wanted = self.options.calibration_images
        available = self.data.num_train
        if wanted > available:
            raise ConfigError(
                f"--calibration-images {wanted} is more than the {available} training images"
            )
        generator = torch.Generator().manual_seed(self.seed)
        positions = torch.randperm(available, generator=generator)[:wanted]
        images, _ = split_images(self.data, "train", positions)
        return images

    def calibration_batches(self, batch_size: int = 32) -> list[np.ndarray]:
        images = self.calibration_images.numpy()
        return [images[i : i + batch_size] for i in range(0, len(images), batch_size)]

    @cached_property
    def fp32_onnx(self) -> Path:
        """The source model exported to ONNX once (several methods start from it)."""
        return export_onnx(
            self.model, self.workdir / "fp32.onnx", self.example(), self.options.opset
        )

    def file(self, name: str) -> Path:
        path = self.workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class OptimizationMethod:
    name: str
    description: str
    build: Callable[[OptimizeContext], list[Variant]]


METHODS: Registry[OptimizationMethod] = Registry("optimization method")


def register_method(
    name: str, description: str
) -> Callable[
    [Callable[[OptimizeContext], list[Variant]]], Callable[[OptimizeContext], list[Variant]]
]:
    def decorate(
        build: Callable[[OptimizeContext], list[Variant]],
    ) -> Callable[[OptimizeContext], list[Variant]]:
        METHODS.register(name, OptimizationMethod(name, description, build))
        return build

    return decorate
