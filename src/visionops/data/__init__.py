"""Datasets, splits and loaders.

>>> from visionops.config import DataConfig
>>> from visionops.data import build_data
>>> data = build_data(DataConfig(dataset="synthetic", synthetic_size=200), seed=0)
>>> len(data.train), len(data.val), data.classes[:2]
(180, 20, ('horizontal_1px', 'horizontal_2px'))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import psutil
import torch
from torch.utils.data import Dataset, Subset

from visionops.config import DataConfig
from visionops.data.cache import CacheInfo, decoded_source
from visionops.data.datasets import DATASETS, DatasetSpec, RawSource
from visionops.data.loaders import (
    Batch,
    ClassicLoader,
    DeviceEvalLoader,
    DeviceLoader,
    TrainBatches,
    data_loader,
)
from visionops.data.sampling import AugmentedDataset, EpochSampler
from visionops.data.tensor_dataset import TensorImageDataset
from visionops.data.transforms import build_transform, image_augmentations, list_augmentations
from visionops.errors import DataError

__all__ = [
    "DATASETS",
    "Batch",
    "DataBundle",
    "EpochSampler",
    "TrainBatches",
    "build_data",
    "create_eval_loader",
    "create_train_loader",
    "list_augmentations",
    "split_images",
]

_STATS_SAMPLE = 2000  # images used to estimate the per-channel mean and std
_DEVICE_MEMORY_SHARE = 0.5  # the device loader may take this share of free device memory


@dataclass
class DataBundle:
    """The splits of one dataset, as (image, label) items before any transform.

    ``splits`` holds "train" and "val" (carved from the source's training images) and "test"
    when the source has one; with ``val_fraction=0`` "train" is every training image and there
    is no "val"; a bundle built for evaluating a test set alone holds only "test".
    """

    splits: dict[str, Dataset[Any]]
    classes: tuple[str, ...]
    image_size: int
    cache: CacheInfo | None = None  # where the decoded images came from, when decoded

    @property
    def train(self) -> Dataset[Any]:
        return self.split("train")

    @property
    def val(self) -> Dataset[Any]:
        return self.split("val")

    @property
    def test(self) -> Dataset[Any] | None:
        return self.splits.get("test")

    @cached_property
    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of the training images, for the model's normalisation.

        Computed on first use: evaluating a logged model (which normalises itself) never needs
        it, and for an image folder without a cache it means decoding a few thousand files.
        """
        return _channel_stats(self.sample_images(_STATS_SAMPLE))

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
        if name not in self.splits:
            raise DataError(
                f"this dataset has no {name!r} split; available: {', '.join(self.split_names)}"
            )
        return self.splits[name]

    @property
    def split_names(self) -> list[str]:
        return list(self.splits)

    def tensors(
        self, name: str, positions: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Split ``name`` (or the items at ``positions`` in it) as uint8 images (N, C, H, W)
        and labels, when it is held decoded at ``image_size``; else None."""
        split = self.split(name)
        base = split.dataset if isinstance(split, Subset) else split
        if not isinstance(base, TensorImageDataset):
            return None
        if tuple(base.images.shape[-2:]) != (self.image_size, self.image_size):
            return None  # raw CIFAR-10 without the cache, to be resized per image
        indices = torch.as_tensor(split.indices) if isinstance(split, Subset) else None
        if positions is not None:
            indices = positions if indices is None else indices[positions]
        if indices is None:
            return base.images, base.labels
        return base.images[indices], base.labels[indices]

    def sample_images(self, count: int) -> torch.Tensor:
        """Up to ``count`` training images spread over the split, float32 in [0, 1]."""
        count = min(self.num_train, count)
        positions = torch.linspace(0, self.num_train - 1, count).long()
        return split_images(self, "train", positions)[0]


def split_images(
    data: DataBundle, split: str, positions: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (float32 NCHW in [0, 1], no augmentation) and labels of ``split``, or of the items
    at ``positions`` in it."""
    to_float = build_transform(None, data.image_size)
    held = data.tensors(split, positions)
    if held is not None:
        return to_float(held[0]).contiguous(), held[1]
    dataset = data.split(split)
    chosen = range(len(dataset)) if positions is None else positions.tolist()  # type: ignore[arg-type]
    items = [dataset[i] for i in chosen]
    images = torch.stack([to_float(image) for image, _ in items]).contiguous()
    return images, torch.tensor([int(label) for _, label in items])


def build_data(cfg: DataConfig, seed: int, *, need_train: bool = True) -> DataBundle:
    """Load ``cfg.dataset`` and carve a validation split that depends only on ``seed`` (none
    with ``val_fraction=0``: a final training on every training image).

    With ``need_train=False`` (evaluation), a source without training images gives a bundle
    of its test split alone.

    Raises:
        ConfigError: ``cfg.dataset`` is not a registered dataset.
        DataError: the data is missing or unreadable, or has no training images although
            ``need_train`` asks for them.
    """
    spec = DATASETS.get(cfg.dataset)
    source, cache = _load_source(spec, cfg, seed)
    splits: dict[str, Dataset[Any]] = {}
    full = source.splits.get("train")
    if full is not None:
        splits = _train_and_val(full, cfg.val_fraction, seed)
    elif need_train:
        raise DataError(
            f"dataset {cfg.dataset!r} in {cfg.data_dir} has only a "
            f"{' and '.join(source.splits)} split and no training images, which training "
            f"needs ({spec.name}: {spec.description})"
        )
    if "test" in source.splits:
        splits["test"] = source.splits["test"]
    return DataBundle(splits, source.classes, cfg.image_size, cache)


def _train_and_val(full: Dataset[Any], val_fraction: float, seed: int) -> dict[str, Dataset[Any]]:
    """The "train" split and a "val" split of ``val_fraction`` of the source's training
    images, fixed by ``seed``; with ``val_fraction=0`` (a final training), "train" alone, every
    image."""
    if val_fraction == 0:
        return {"train": full}
    size = _size(full)
    num_val = max(1, round(size * val_fraction))
    if num_val >= size:
        raise DataError(f"val_fraction={val_fraction} leaves no training images out of {size}")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed)).tolist()
    return {"train": Subset(full, order[num_val:]), "val": Subset(full, order[:num_val])}


def _load_source(
    spec: DatasetSpec, cfg: DataConfig, seed: int
) -> tuple[RawSource, CacheInfo | None]:
    if spec.cacheable and cfg.cache != "off":
        decoded = decoded_source(cfg)
        return RawSource(dict(decoded.splits), decoded.classes), decoded.info
    return spec.load(cfg, seed), None


def _size(dataset: Dataset[Any]) -> int:
    return len(dataset)  # type: ignore[arg-type]  # every dataset here is map-style and sized


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(images.mean(dim=(0, 2, 3)).tolist()), tuple(std.tolist())


def use_device_loader(data: DataBundle, cfg: DataConfig, device: torch.device) -> bool:
    """Whether ``cfg.loader`` resolves to the device loader for this data and device."""
    if cfg.loader != "auto":
        return cfg.loader == "device"
    if any(a.batched is None for a in image_augmentations(cfg.augmentations)):
        return False
    return _fits_on_device(data, "train", device)


def _fits_on_device(data: DataBundle, split: str, device: torch.device) -> bool:
    first = data.tensors(split, torch.tensor([0]))
    if first is None:
        return False
    needed = first[0].nbytes * _size(data.split(split))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = psutil.virtual_memory().available
    return needed < _DEVICE_MEMORY_SHARE * free


def create_train_loader(
    data: DataBundle,
    cfg: DataConfig,
    *,
    seed: int,
    samples_per_epoch: int,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
    rank: int = 0,
    num_ranks: int = 1,
) -> TrainBatches:
    """The training loader ``cfg.loader`` asks for (see ``visionops.data.loaders``); in a job
    of ``num_ranks`` processes, rank ``rank``'s share of every global batch."""
    common: dict[str, Any] = dict(
        num_classes=data.num_classes,
        samples_per_epoch=samples_per_epoch,
        seed=seed,
        device=device,
        memory_format=memory_format,
        rank=rank,
        num_ranks=num_ranks,
    )
    if use_device_loader(data, cfg, device):
        tensors = data.tensors("train")
        if tensors is None:
            raise DataError("loader=device needs decoded images; set cache to auto, disk or memory")
        return DeviceLoader(*tensors, cfg, **common)
    return ClassicLoader(data.train, cfg, image_size=data.image_size, **common)


def create_eval_loader(
    data: DataBundle,
    split: str,
    cfg: DataConfig,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
    rank: int = 0,
    num_ranks: int = 1,
) -> Iterable[Batch]:
    """Batches of un-augmented images of ``split`` in dataset order, on ``device`` when the
    split is held decoded, else from a DataLoader (evaluate moves them). In a job of
    ``num_ranks`` processes, rank ``rank`` gets every ``num_ranks``-th image."""
    if cfg.loader != "classic" and _fits_on_device(data, split, device):
        tensors = data.tensors(split)
        assert tensors is not None  # _fits_on_device checked that the split is decoded
        images, labels = (t[rank::num_ranks] for t in tensors)
        return DeviceEvalLoader(images, labels, cfg.eval_batch_size, device, memory_format)
    wrapped = AugmentedDataset(data.split(split), build_transform(None, data.image_size), seed=0)
    shard = Subset(wrapped, range(rank, len(wrapped), num_ranks)) if num_ranks > 1 else wrapped
    return data_loader(shard, cfg, device, batch_size=cfg.eval_batch_size)
