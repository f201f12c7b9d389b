"""Training and evaluation batches, ready on the training device.

Two training loaders with the same interface (``set_epoch``, iteration, ``len``):

- ``DeviceLoader``: the decoded uint8 dataset lives on the training device; each batch is a
  gather plus batched augmentation ops, with no per-sample Python and no worker processes.
- ``ClassicLoader``: a ``torch.utils.data.DataLoader`` over per-image transforms (for data that
  does not fit, or per-image augmentations such as AutoAugment), with a CUDA-stream prefetcher
  on GPUs.

Both are deterministic: a batch is a pure function of (seed, epoch, batch index), so a run
resumed mid-epoch continues with exactly the batches an uninterrupted run would see.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from visionops.config import DataConfig
from visionops.data.batched import BatchContext
from visionops.data.sampling import AugmentedDataset, EpochSampler, mix_seed
from visionops.data.transforms import build_batch_mix, build_transform, image_augmentations

Batch = tuple[torch.Tensor, torch.Tensor]


class TrainBatches(Protocol):
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...
    def __iter__(self) -> Iterator[Batch]: ...
    def __len__(self) -> int: ...


def _batch_key(batch: int, rank: int, num_ranks: int) -> int:
    """Seeds a rank's part of a global batch: each rank draws its own randomness, and a job of
    one process draws what it always did."""
    return batch * num_ranks + rank


class _BatchMix:
    """CutMix/MixUp on a whole batch, seeded by the batch's position (labels become soft)."""

    def __init__(self, cfg: DataConfig, num_classes: int, seed: int, rank: int, num_ranks: int):
        self.transform: v2.Transform | None = build_batch_mix(cfg, num_classes)
        self.seed = seed
        self.rank, self.num_ranks = rank, num_ranks

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, epoch: int, batch: int) -> Batch:
        if self.transform is None:
            return images, labels
        key = _batch_key(batch, self.rank, self.num_ranks)
        # torchvision draws the mixing weight and box from the global CPU generator.
        with torch.random.fork_rng(devices=[]):
            # Only the CPU generator: torch.manual_seed would also reset the CUDA ones.
            torch.random.default_generator.manual_seed(mix_seed(self.seed + 1, epoch, key))
            return self.transform(images, labels)


def _to_float(images: torch.Tensor) -> torch.Tensor:
    # The classic pipeline's conversion, so both loaders give bit-identical pixels.
    return v2.functional.to_dtype(images, torch.float32, scale=True)


class DeviceLoader:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        cfg: DataConfig,
        *,
        num_classes: int,
        samples_per_epoch: int,
        seed: int,
        device: torch.device,
        memory_format: torch.memory_format = torch.contiguous_format,
        rank: int = 0,
        num_ranks: int = 1,
    ) -> None:
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.cfg = cfg
        self.batch_size = cfg.batch_size  # global: this rank takes every num_ranks-th image
        self.sampler = EpochSampler(len(images), samples_per_epoch, seed)
        self.seed = seed
        self.rank, self.num_ranks = rank, num_ranks
        self.device = device
        self.memory_format = memory_format
        self.ops = [a.batched for a in image_augmentations(cfg.augmentations) if a.batched]
        self.mix = _BatchMix(cfg, num_classes, seed, rank, num_ranks)
        self.generator = torch.Generator(device=device)
        self.image_bits = (
            torch.randint(0, 2, (len(images),), generator=torch.Generator().manual_seed(seed))
            .bool()
            .to(device)
        )
        self.start_batch = 0

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.samples_per_epoch // self.batch_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.start_batch = start_batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.sampler.epoch
        order = self.sampler.order(epoch).to(self.device)
        for batch in range(self.start_batch, self.batches_per_epoch):
            start = batch * self.batch_size
            indices = order[start + self.rank : start + self.batch_size : self.num_ranks]
            yield self.batch(epoch, batch, indices)

    def batch(self, epoch: int, batch: int, indices: torch.Tensor) -> Batch:
        key = _batch_key(batch, self.rank, self.num_ranks)
        self.generator.manual_seed(mix_seed(self.seed, epoch, key))
        context = BatchContext(self.cfg, self.generator, epoch, indices, self.image_bits)
        images = self.images[indices]
        for op in self.ops:
            images = op(images, context)
        images = _to_float(images).contiguous(memory_format=self.memory_format)
        return self.mix(images, self.labels[indices], epoch, batch)


class ClassicLoader:
    def __init__(
        self,
        dataset: Dataset[Any],
        cfg: DataConfig,
        *,
        num_classes: int,
        image_size: int,
        samples_per_epoch: int,
        seed: int,
        device: torch.device,
        memory_format: torch.memory_format = torch.contiguous_format,
        rank: int = 0,
        num_ranks: int = 1,
    ) -> None:
        size = len(dataset)  # type: ignore[arg-type]
        self.sampler = EpochSampler(size, samples_per_epoch, seed, rank, num_ranks)
        augmented = AugmentedDataset(dataset, build_transform(cfg, image_size), seed)
        self.loader = data_loader(
            augmented,
            cfg,
            device,
            batch_size=cfg.batch_size // num_ranks,
            sampler=self.sampler,
            drop_last=True,
        )
        self.batch_size = cfg.batch_size  # global, as the sampler's start counts it
        self.seed = seed
        self.device = device
        self.memory_format = memory_format
        self.mix = _BatchMix(cfg, num_classes, seed, rank, num_ranks)
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start=start_batch * self.batch_size)
        self.start_batch = start_batch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        epoch = self.sampler.epoch
        batches = _to_device(iter(self.loader), self.device, self.memory_format)
        for batch, (images, labels) in enumerate(batches, start=self.start_batch):
            yield self.mix(images, labels, epoch, batch)


def data_loader(
    dataset: Dataset[Any], cfg: DataConfig, device: torch.device, **kwargs: Any
) -> DataLoader:
    workers = cfg.num_workers
    pin = cfg.pin_memory == "on" or (cfg.pin_memory == "auto" and device.type == "cuda")
    return DataLoader(
        dataset,
        batch_size=kwargs.pop("batch_size", cfg.batch_size),
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=cfg.persistent_workers and workers > 0,
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
        # A private generator: creating an iterator must not draw from the global RNG, or a
        # resumed run's dropout and init randomness would drift from an uninterrupted one.
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    )


def _to_device(
    batches: Iterator[Batch], device: torch.device, memory_format: torch.memory_format
) -> Iterator[Batch]:
    """Move batches to ``device``; on CUDA, copy the next batch on a side stream while the
    current one is being used, so the copy overlaps compute."""
    if device.type != "cuda":
        for images, labels in batches:
            yield images.to(device, memory_format=memory_format), labels.to(device)
        return
    stream = torch.cuda.Stream(device)

    def copy_next() -> Batch | None:
        batch = next(batches, None)
        if batch is None:
            return None
        with torch.cuda.stream(stream):
            images = batch[0].to(device, non_blocking=True, memory_format=memory_format)
            return images, batch[1].to(device, non_blocking=True)

    upcoming = copy_next()
    while upcoming is not None:
        torch.cuda.current_stream(device).wait_stream(stream)
        current = upcoming
        for tensor in current:
            # The tensors were allocated on the side stream; tell the allocator the main
            # stream uses them, or their memory could be reused while still being read.
            tensor.record_stream(torch.cuda.current_stream(device))
        upcoming = copy_next()
        yield current


class DeviceEvalLoader:
    """Evaluation batches from a uint8 tensor split held on the device, in dataset order."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        device: torch.device,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> None:
        self.images, self.labels = images.to(device), labels.to(device)
        self.batch_size = batch_size
        self.memory_format = memory_format

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self.images), self.batch_size):
            images = _to_float(self.images[start : start + self.batch_size])
            yield (
                images.contiguous(memory_format=self.memory_format),
                self.labels[start : start + self.batch_size],
            )
