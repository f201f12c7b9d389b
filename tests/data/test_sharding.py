"""Sharding for distributed training: the ranks' k-th batches together are exactly the k-th
global batch of a single process, for the sampler, both training loaders and evaluation.

Rank r takes positions r, r + N, r + 2N, ... of each global batch (DistributedSampler's
interleave), so interleaving the ranks' batches rebuilds the single-process batch.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from visionops.config import DataConfig
from visionops.data import DataBundle, build_data, create_eval_loader, create_train_loader
from visionops.data.loaders import ClassicLoader, DeviceLoader
from visionops.data.sampling import EpochSampler

CPU = torch.device("cpu")
BATCH = 12  # divisible by 1, 2, 3 and 4 processes
SAMPLES = 96  # 8 global batches of the 270 training images
LOADERS = {"device": DeviceLoader, "classic": ClassicLoader}


def _interleave(parts: list[torch.Tensor]) -> torch.Tensor:
    """The global batch from the ranks' shares: position i comes from rank i % N."""
    return torch.stack(parts, dim=1).flatten(0, 1)


def _cfg(**fields: Any) -> DataConfig:
    return DataConfig(
        dataset="synthetic", synthetic_size=300, batch_size=BATCH, eval_batch_size=25, **fields
    )


@pytest.fixture(scope="module")
def data() -> DataBundle:
    return build_data(_cfg(), seed=0)


def _batches(
    data: DataBundle,
    cfg: DataConfig,
    rank: int = 0,
    num_ranks: int = 1,
    *,
    epoch: int = 1,
    start_batch: int = 0,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = create_train_loader(
        data,
        cfg,
        seed=4,
        samples_per_epoch=SAMPLES,
        device=CPU,
        rank=rank,
        num_ranks=num_ranks,
    )
    assert isinstance(loader, LOADERS[cfg.loader])
    loader.set_epoch(epoch, start_batch=start_batch)
    batches = [(images.clone(), labels.clone()) for images, labels in loader]
    assert len(batches) == len(loader) == SAMPLES // BATCH - start_batch
    return batches


@pytest.mark.parametrize("num_ranks", [2, 3, 4])
@pytest.mark.parametrize("start", [0, 2 * BATCH])
def test_sampler_shards_interleave_into_the_single_process_batches(
    num_ranks: int, start: int
) -> None:
    whole = EpochSampler(100, SAMPLES, seed=5)
    whole.set_epoch(2, start=start)
    expected = list(whole)
    shards = []
    for rank in range(num_ranks):
        sampler = EpochSampler(100, SAMPLES, seed=5, rank=rank, num_ranks=num_ranks)
        sampler.set_epoch(2, start=start)
        shards.append(list(sampler))
        assert len(sampler) == len(shards[-1]) == (SAMPLES - start) // num_ranks
    per_rank = BATCH // num_ranks
    for k in range((SAMPLES - start) // BATCH):
        parts = [shard[k * per_rank : (k + 1) * per_rank] for shard in shards]
        rebuilt = [parts[i % num_ranks][i // num_ranks] for i in range(BATCH)]
        assert rebuilt == expected[k * BATCH : (k + 1) * BATCH], f"global batch {k}"


def test_a_sampler_rank_outside_the_job_is_refused() -> None:
    with pytest.raises(ValueError, match=r"rank=2 outside 0\.\.1"):
        EpochSampler(100, 50, seed=0, rank=2, num_ranks=2)


@pytest.mark.parametrize("loader", ["device", "classic"])
@pytest.mark.parametrize("num_ranks", [2, 3])
@pytest.mark.parametrize("start_batch", [0, 3])
def test_train_loader_shards_rebuild_the_single_process_batches(
    data: DataBundle, loader: str, num_ranks: int, start_batch: int
) -> None:
    cfg = _cfg(loader=loader, augmentations=())
    single = _batches(data, cfg, start_batch=start_batch)
    shards = [_batches(data, cfg, r, num_ranks, start_batch=start_batch) for r in range(num_ranks)]
    for k, (images, labels) in enumerate(single):
        parts = [shard[k] for shard in shards]
        assert all(len(part[1]) == BATCH // num_ranks for part in parts)
        assert torch.equal(_interleave([part[0] for part in parts]), images), f"batch {k}"
        assert torch.equal(_interleave([part[1] for part in parts]), labels), f"batch {k}"


@pytest.mark.parametrize("loader", ["device", "classic"])
def test_augmented_shards_hold_the_single_process_images(data: DataBundle, loader: str) -> None:
    # Each rank draws its own crops and flips, so only which images (their labels) must match.
    cfg = _cfg(loader=loader, augmentations=("random_crop", "horizontal_flip"))
    single = _batches(data, cfg)
    shards = [_batches(data, cfg, rank, 2) for rank in range(2)]
    for k, (_, labels) in enumerate(single):
        assert torch.equal(_interleave([shard[k][1] for shard in shards]), labels)
    # Deterministic per rank: the same rank sees the same batches again.
    again = _batches(data, cfg, 1, 2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, shards[1], strict=True))


@pytest.mark.parametrize("loader", ["device", "classic"])
@pytest.mark.parametrize("num_ranks", [2, 3])
def test_eval_shards_cover_the_split_once(data: DataBundle, loader: str, num_ranks: int) -> None:
    cfg = _cfg(loader=loader)

    def split(rank: int = 0, size: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        batches = list(create_eval_loader(data, "val", cfg, CPU, rank=rank, num_ranks=size))
        return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])

    images, labels = split()
    assert len(labels) == 30
    for rank in range(num_ranks):
        shard_images, shard_labels = split(rank, num_ranks)
        assert torch.equal(shard_images, images[rank::num_ranks])
        assert torch.equal(shard_labels, labels[rank::num_ranks])
