"""Transform pipelines (torchvision.transforms.v2) and the registry of training augmentations.

Train pipeline: to uint8 tensor -> resize (if the source size differs) -> augmentations ->
float32 in [0, 1]. Evaluation pipeline: the same without augmentations. Normalisation is not
here: it belongs to the model (see ``visionops.models.classifier``).

A new augmentation is one ``register_augmentation`` call; configs name them in
``DataConfig.augmentations``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import v2

AugmentationFactory = Callable[[int], v2.Transform]

_AUGMENTATIONS: dict[str, AugmentationFactory] = {}


def register_augmentation(name: str) -> Callable[[AugmentationFactory], AugmentationFactory]:
    """Register ``factory(image_size) -> Transform`` under ``name``."""

    def decorate(factory: AugmentationFactory) -> AugmentationFactory:
        _AUGMENTATIONS[name] = factory
        return factory

    return decorate


def list_augmentations() -> list[str]:
    return sorted(_AUGMENTATIONS)


@register_augmentation("random_crop")
def _random_crop(image_size: int) -> v2.Transform:
    # Pad by an eighth of the side (4 px at 32x32), the standard CIFAR translation.
    return v2.RandomCrop(image_size, padding=max(1, image_size // 8), padding_mode="reflect")


@register_augmentation("horizontal_flip")
def _horizontal_flip(image_size: int) -> v2.Transform:
    return v2.RandomHorizontalFlip()


def build_transform(image_size: int, augmentations: Sequence[str] = ()) -> v2.Transform:
    """PIL image or uint8 CHW tensor -> float32 CHW tensor in [0, 1]."""
    return v2.Compose(
        [
            v2.ToImage(),
            _ResizeIfNeeded(image_size),
            *(_AUGMENTATIONS[name](image_size) for name in augmentations),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


class _ResizeIfNeeded(v2.Transform):
    """Resize to a square side only when the image is not already that size (free for CIFAR)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.resize = v2.Resize((size, size), antialias=True)

    def forward(self, *inputs: object) -> object:
        image = inputs[0] if len(inputs) == 1 else inputs
        if isinstance(image, torch.Tensor) and tuple(image.shape[-2:]) == (self.size, self.size):
            return image
        return self.resize(image)
