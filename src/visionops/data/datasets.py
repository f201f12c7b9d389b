"""The dataset registry: what ``--dataset NAME`` loads, and whether it can be cached.

A dataset loads its *raw splits*: ``train`` and/or ``test``, as (image, label) items before
any transform (uint8 tensors, or PIL images to decode). ``build_data`` carves validation out of
``train``; ``visionops.data.cache`` decodes the raw splits of a dataset backed by files.

    >>> from visionops.data.datasets import DATASETS
    >>> DATASETS.names()
    ['cifar10', 'imagefolder', 'synthetic']
    >>> DATASETS.get("synthetic").cacheable
    False
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch.utils.data import Dataset

from visionops._registry import Registry

if TYPE_CHECKING:
    from visionops.config import DataConfig


@dataclass(frozen=True)
class RawSource:
    """A dataset's splits as the source holds them, before decoding or any transform."""

    splits: dict[str, Dataset[Any]]  # "train" and/or "test"
    classes: tuple[str, ...]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    #: ``load(cfg, seed)``: the raw splits; ``seed`` matters only to a generated dataset.
    load: Callable[[DataConfig, int], RawSource]
    #: ``files(cfg)``: every source file (hashed into the disk cache's key), or None for a
    #: dataset generated in memory, which is born decoded and never cached.
    files: Callable[[DataConfig], list[Path]] | None = None

    @property
    def cacheable(self) -> bool:
        """Whether the dataset is read from files that the decoded-image cache can hold."""
        return self.files is not None


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(spec.name, spec)


def _load_cifar10(cfg: DataConfig, seed: int) -> RawSource:
    from visionops.data.cifar10 import load_cifar10

    train, test, classes = load_cifar10(cfg.data_dir, cfg.download)
    return RawSource({"train": train, "test": test}, classes)


def _cifar10_files(cfg: DataConfig) -> list[Path]:
    from visionops.data.cifar10 import cifar10_files

    return cifar10_files(cfg.data_dir, cfg.download)


def _load_imagefolder(cfg: DataConfig, seed: int) -> RawSource:
    from visionops.data.imagefolder import load_imagefolder

    train, test, classes = load_imagefolder(cfg.data_dir)
    splits: dict[str, Dataset[Any]] = {}
    if train is not None:
        splits["train"] = train
    if test is not None:
        splits["test"] = test
    return RawSource(splits, classes)


def _imagefolder_files(cfg: DataConfig) -> list[Path]:
    from visionops.data.imagefolder import imagefolder_files

    return imagefolder_files(cfg.data_dir)


def _generate_synthetic(cfg: DataConfig, seed: int) -> RawSource:
    from visionops.data.synthetic import CLASS_NAMES, make_synthetic
    from visionops.data.tensor_dataset import TensorImageDataset

    images, labels = make_synthetic(cfg.synthetic_size, seed=seed, image_size=cfg.image_size)
    return RawSource({"train": TensorImageDataset(images, labels)}, CLASS_NAMES)


register_dataset(
    DatasetSpec(
        "cifar10",
        "CIFAR-10 in torchvision's layout (DATA_DIR/cifar-10-batches-py), downloaded when "
        "missing: train and test splits",
        _load_cifar10,
        _cifar10_files,
    )
)
register_dataset(
    DatasetSpec(
        "imagefolder",
        "Folders of images, one per class: DATA_DIR/train/<class>/ (+ DATA_DIR/test/<class>/) "
        "or DATA_DIR/<class>/; DATA_DIR/test/<class>/ alone is a test set, for evaluation only",
        _load_imagefolder,
        _imagefolder_files,
    )
)
register_dataset(
    DatasetSpec(
        "synthetic",
        "Glyph images (synthetic_size of them) generated in memory from the seed: no files, "
        "no cache",
        _generate_synthetic,
    )
)
