"""The registry of training augmentations and the per-image transform pipelines.

An augmentation works at one of two stages:

- **image** stage: it changes each image on its own. It has a per-image implementation (a
  ``torchvision.transforms.v2`` transform, run by the classic loader on one uint8 image), a
  batched implementation (tensor ops on a uint8 batch on the training device, run by the
  device loader; see ``visionops.data.batched``), or both.
- **batch** stage: it mixes images and labels across the batch (CutMix, MixUp). It runs on
  the float batch after either loader and turns the labels into class probabilities.

Classic pipeline: to uint8 tensor -> resize (if the source size differs) -> image-stage
augmentations -> float32 in [0, 1]. Normalisation is not here: it belongs to the model (see
``visionops.models.classifier``).

    >>> from visionops.data.transforms import get_augmentation
    >>> get_augmentation("cutmix").image_stage
    False
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torchvision.transforms import v2

from visionops._registry import Registry
from visionops.data import batched

if TYPE_CHECKING:
    from visionops.config import DataConfig

PerImageFactory = Callable[["DataConfig"], v2.Transform]
BatchMixFactory = Callable[["DataConfig", int], v2.Transform]


@dataclass(frozen=True)
class Augmentation:
    name: str
    description: str
    per_image: PerImageFactory | None = None  # classic loader
    batched: batched.BatchedOp | None = None  # device loader
    batch_mix: BatchMixFactory | None = None  # both loaders, after batching

    @property
    def image_stage(self) -> bool:
        return self.batch_mix is None


AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")


def register_augmentation(augmentation: Augmentation) -> Augmentation:
    return AUGMENTATIONS.register(augmentation.name, augmentation)


def list_augmentations() -> list[str]:
    return AUGMENTATIONS.names()


def augmentation_specs() -> list[Augmentation]:
    return AUGMENTATIONS.entries()


def get_augmentation(name: str) -> Augmentation:
    return AUGMENTATIONS.get(name)


def _cutout_area(cfg: DataConfig) -> float:
    side = min(cfg.cutout_size, cfg.image_size)
    return side * side / cfg.image_size**2


for _augmentation in (
    Augmentation(
        "random_crop",
        "Pad by crop_padding pixels (reflect) and crop back: a random translation.",
        per_image=lambda cfg: v2.RandomCrop(
            cfg.image_size, padding=cfg.crop_padding, padding_mode="reflect"
        ),
        batched=batched.random_crop,
    ),
    Augmentation(
        "horizontal_flip",
        "Mirror half of the images, chosen at random.",
        per_image=lambda cfg: v2.RandomHorizontalFlip(),
        batched=batched.horizontal_flip,
    ),
    Augmentation(
        "alternating_flip",
        "Mirror a fixed random half of the images in even epochs and the other half in odd "
        "epochs (airbench; device loader only).",
        batched=batched.alternating_flip,
    ),
    Augmentation(
        "cutout",
        "Erase one cutout_size square per image (DeVries & Taylor, 2017).",
        # A fixed-size square is RandomErasing with a fixed area and aspect ratio.
        per_image=lambda cfg: v2.RandomErasing(
            p=1.0, scale=(_cutout_area(cfg),) * 2, ratio=(1.0, 1.0), value=0
        ),
        batched=batched.cutout,
    ),
    Augmentation(
        "autoaugment",
        "AutoAugment with the CIFAR-10 policy (classic loader).",
        per_image=lambda cfg: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
    ),
    Augmentation(
        "randaugment",
        "RandAugment, 2 operations of magnitude 9 (classic loader).",
        per_image=lambda cfg: v2.RandAugment(),
    ),
    Augmentation(
        "trivialaugment",
        "TrivialAugmentWide: one random operation of random strength (classic loader).",
        per_image=lambda cfg: v2.TrivialAugmentWide(),
    ),
    Augmentation(
        "cutmix",
        "CutMix: paste a box from another image, mixing the labels by area (alpha: mix_alpha).",
        batch_mix=lambda cfg, num_classes: v2.CutMix(num_classes=num_classes, alpha=cfg.mix_alpha),
    ),
    Augmentation(
        "mixup",
        "MixUp: blend pairs of images and their labels (alpha: mix_alpha).",
        batch_mix=lambda cfg, num_classes: v2.MixUp(num_classes=num_classes, alpha=cfg.mix_alpha),
    ),
):
    register_augmentation(_augmentation)


def image_augmentations(names: Sequence[str]) -> list[Augmentation]:
    return [a for a in map(get_augmentation, names) if a.image_stage]


def build_transform(cfg: DataConfig | None, image_size: int) -> v2.Transform:
    """PIL image or uint8 CHW tensor -> float32 CHW tensor in [0, 1].

    With ``cfg``, its image-stage augmentations run (per image); without, none do.
    """
    augmentations = image_augmentations(cfg.augmentations) if cfg else []
    missing = [a.name for a in augmentations if a.per_image is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} only run on the device loader")
    return v2.Compose(
        [
            build_decode(image_size),
            *(a.per_image(cfg) for a in augmentations if a.per_image and cfg),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def build_decode(image_size: int) -> v2.Transform:
    """PIL image or uint8 CHW tensor -> uint8 CHW tensor of side ``image_size`` (what the
    dataset cache stores, and the first step of every training and evaluation pipeline)."""
    return v2.Compose([v2.ToImage(), _ResizeIfNeeded(image_size)])


def build_batch_mix(cfg: DataConfig, num_classes: int) -> v2.Transform | None:
    """The batch-stage transform of ``cfg.augmentations``: one of them per batch, or None."""
    mixes = [
        a.batch_mix(cfg, num_classes)
        for a in map(get_augmentation, cfg.augmentations)
        if a.batch_mix
    ]
    if not mixes:
        return None
    # With both CutMix and MixUp, each batch gets one of them (torchvision's reference recipe).
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)


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
