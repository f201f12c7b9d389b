"""Resumable, worker-count-independent data order and augmentation.

The sampler yields ``(epoch, index)`` keys: the order of an epoch is a permutation drawn
from ``(seed, epoch)`` alone, and each sample's augmentation is seeded from
``(seed, epoch, index)``. Together they make a batch a pure function of the position in
training, so a run resumed mid-epoch sees exactly the images, crops and flips that an
uninterrupted run would, whatever ``num_workers`` is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

SampleKey = tuple[int, int]


class EpochSampler(Sampler[SampleKey]):
    """The epoch's order, or rank ``rank``'s share of it in a job of ``num_ranks`` processes.

    Ranks take every ``num_ranks``-th sample, as torch's ``DistributedSampler`` does, so the
    ranks' k-th batches together are exactly the k-th global batch of a single process. Unlike
    ``DistributedSampler`` it starts mid-epoch (``start``) and its order does not depend on the
    number of ranks, so a checkpoint resumes in a job of any size.
    """

    def __init__(
        self,
        dataset_size: int,
        samples_per_epoch: int,
        seed: int,
        rank: int = 0,
        num_ranks: int = 1,
    ) -> None:
        if not 0 < samples_per_epoch <= dataset_size:
            raise ValueError(f"samples_per_epoch={samples_per_epoch} outside 1..{dataset_size}")
        if not 0 <= rank < num_ranks:
            raise ValueError(f"rank={rank} outside 0..{num_ranks - 1}")
        self.dataset_size = dataset_size
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.rank, self.num_ranks = rank, num_ranks
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch ``epoch`` from its ``start``-th sample on (a mid-epoch resume);
        ``start`` counts the samples of all ranks and is a whole number of global batches."""
        self.epoch, self.start = epoch, start

    def order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.dataset_size, generator=generator)[: self.samples_per_epoch]

    def __iter__(self) -> Iterator[SampleKey]:
        epoch = self.epoch
        for index in self.order(epoch)[self.start + self.rank :: self.num_ranks].tolist():
            yield epoch, index

    def __len__(self) -> int:
        return len(range(self.start + self.rank, self.samples_per_epoch, self.num_ranks))


class AugmentedDataset(Dataset[tuple[torch.Tensor, int]]):
    """Applies ``transform`` to a dataset of (image, label); keyed items get seeded randomness."""

    def __init__(
        self, base: Dataset[Any], transform: Callable[[Any], torch.Tensor], seed: int
    ) -> None:
        self.base = base
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: int | SampleKey) -> tuple[torch.Tensor, int]:
        if isinstance(key, int):
            image, label = self.base[key]
            return self.transform(image), label
        epoch, index = key
        image, label = self.base[index]
        # fork_rng keeps the caller's global RNG (dropout, init) untouched when num_workers=0.
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(mix_seed(self.seed, epoch, index))
            return self.transform(image), label


def mix_seed(seed: int, epoch: int, index: int) -> int:
    """A seed for one (epoch, sample or batch) position of a run seeded with ``seed``."""
    return ((seed * 1_000_003 + epoch) * 10_000_019 + index) & 0x7FFF_FFFF_FFFF_FFFF
