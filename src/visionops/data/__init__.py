"""Datasets, splits and loaders.

>>> from visionops.config import DataConfig
>>> from visionops.data import build_data
>>> data = build_data(DataConfig(dataset="synthetic", synthetic_size=200), seed=0)
>>> len(data.train), len(data.val), data.classes[:2]
(180, 20, ('glyph_0', 'glyph_1'))
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from visionops.config import DataConfig
from visionops.data.sampling import AugmentedDataset, EpochSampler
from visionops.data.transforms import build_transform, list_augmentations, register_augmentation
from visionops.errors import DataError

__all__ = [
    "DataBundle",
    "EpochSampler",
    "build_data",
    "eval_loader",
    "list_augmentations",
    "register_augmentation",
    "train_loader",
]

_STATS_SAMPLE = 2000  # images used to estimate the per-channel mean and std


@dataclass
class DataBundle:
    """The splits of one dataset, as (image, label) items before any transform."""

    train: Dataset[Any]
    val: Dataset[Any]
    test: Dataset[Any] | None
    classes: tuple[str, ...]
    image_size: int

    @cached_property
    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images, for the model's normalisation.

        Computed on first use: evaluating a logged model (which normalises itself) never needs
        it, and for an image folder it means decoding a few thousand files.
        """
        return _channel_stats(self.train, self.image_size)

    @property
    def mean(self) -> tuple[float, ...]:
        return self.channel_stats[0]

    @property
    def std(self) -> tuple[float, ...]:
        return self.channel_stats[1]

    @property
    def num_train(self) -> int:
        return _size(self.train)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Dataset[Any]:
        if name == "train":
            return self.train
        if name == "val":
            return self.val
        if name == "test" and self.test is not None:
            return self.test
        raise DataError(
            f"this dataset has no {name!r} split; available: {', '.join(self.split_names)}"
        )

    @property
    def split_names(self) -> list[str]:
        return ["train", "val"] + (["test"] if self.test is not None else [])


def build_data(cfg: DataConfig, seed: int) -> DataBundle:
    """Load ``cfg.dataset`` and carve a validation split that depends only on ``seed``."""
    full, test, classes = _load_source(cfg, seed)
    size = _size(full)
    num_val = max(1, round(size * cfg.val_fraction))
    if num_val >= size:
        raise DataError(f"val_fraction={cfg.val_fraction} leaves no training images out of {size}")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    train, val = Subset(full, order[num_val:]), Subset(full, order[:num_val])
    return DataBundle(train, val, test, classes, cfg.image_size)


def _load_source(
    cfg: DataConfig, seed: int
) -> tuple[Dataset[Any], Dataset[Any] | None, tuple[str, ...]]:
    if cfg.dataset == "synthetic":
        from visionops.data.synthetic import CLASS_NAMES, make_synthetic
        from visionops.data.tensor_dataset import TensorImageDataset

        images, labels = make_synthetic(cfg.synthetic_size, seed=seed, image_size=cfg.image_size)
        return TensorImageDataset(images, labels), None, CLASS_NAMES
    if cfg.dataset == "cifar10":
        from visionops.data.cifar10 import load_cifar10

        return load_cifar10(cfg.data_dir, cfg.download)
    from visionops.data.imagefolder import load_imagefolder

    return load_imagefolder(cfg.data_dir)


def _size(dataset: Dataset[Any]) -> int:
    return len(dataset)  # type: ignore[arg-type]  # every dataset here is map-style and sized


def _channel_stats(
    train: Dataset[Any], image_size: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    count = min(_size(train), _STATS_SAMPLE)
    indices = torch.linspace(0, _size(train) - 1, count).long().tolist()
    sample = AugmentedDataset(Subset(train, indices), build_transform(image_size), seed=0)
    images = torch.stack([sample[i][0] for i in range(count)])
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(images.mean(dim=(0, 2, 3)).tolist()), tuple(std.tolist())


def train_loader(
    data: DataBundle, cfg: DataConfig, sampler: EpochSampler, seed: int, pin_memory: bool
) -> DataLoader:
    """Batches of augmented training images in the order ``sampler`` dictates."""
    dataset = AugmentedDataset(
        data.train, build_transform(data.image_size, cfg.augmentations), seed
    )
    return _loader(
        dataset, cfg.batch_size, cfg.num_workers, pin_memory, sampler=sampler, drop_last=True
    )


def eval_loader(
    dataset: Dataset[Any], cfg: DataConfig, image_size: int, pin_memory: bool
) -> DataLoader:
    """Batches of un-augmented images in dataset order."""
    wrapped = AugmentedDataset(dataset, build_transform(image_size), seed=0)
    return _loader(wrapped, cfg.eval_batch_size, cfg.num_workers, pin_memory)


def _loader(
    dataset: Dataset[Any], batch_size: int, num_workers: int, pin_memory: bool, **kwargs: Any
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        # A private generator: creating an iterator must not draw from the global RNG, or a
        # resumed run's dropout and init randomness would drift from an uninterrupted one.
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )
