"""The module that is trained, checkpointed and logged: normalisation + backbone.

Normalisation lives inside the model so that a logged or served model takes plain images
(float32, NCHW, values in [0, 1]) and cannot be fed statistics that differ from training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn


class ImageClassifier(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone((images - self.mean) / self.std)

    @property
    def needs_data_init(self) -> bool:
        """Whether the backbone sets some weights from the data (airbench's whitening)."""
        return hasattr(self.backbone, "init_from_data")

    def init_from_data(self, images: torch.Tensor) -> None:
        """Hand a sample of training images (float, [0, 1]) to the backbone, normalised."""
        init = cast(Callable[[torch.Tensor], None], self.backbone.init_from_data)
        init((images - self.mean) / self.std)
