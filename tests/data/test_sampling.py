"""EpochSampler and AugmentedDataset: a batch is a pure function of (seed, epoch, position)."""

from __future__ import annotations

import pytest
import torch

from visionops.config import DataConfig
from visionops.data import DataBundle, build_data, create_train_loader
from visionops.data.sampling import AugmentedDataset, EpochSampler
from visionops.data.tensor_dataset import TensorImageDataset
from visionops.data.transforms import build_transform


def test_same_seed_and_epoch_give_the_same_order() -> None:
    a = EpochSampler(100, 60, seed=7)
    b = EpochSampler(100, 60, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    assert torch.equal(a.order(3), b.order(3))


def test_different_epochs_and_seeds_give_different_orders() -> None:
    sampler = EpochSampler(100, 100, seed=7)
    assert not torch.equal(sampler.order(0), sampler.order(1))
    assert not torch.equal(sampler.order(0), EpochSampler(100, 100, seed=8).order(0))


@pytest.mark.parametrize("samples_per_epoch", [1, 37, 100])
def test_order_is_a_repeat_free_subset(samples_per_epoch: int) -> None:
    sampler = EpochSampler(100, samples_per_epoch, seed=1)
    sampler.set_epoch(2)
    keys = list(sampler)
    assert len(keys) == samples_per_epoch == len(sampler)
    assert all(epoch == 2 for epoch, _ in keys)
    indices = [index for _, index in keys]
    assert len(set(indices)) == samples_per_epoch
    assert all(0 <= index < 100 for index in indices)
    if samples_per_epoch == 100:
        assert sorted(indices) == list(range(100))
        assert indices != list(range(100))  # shuffled


def test_the_default_epoch_is_zero() -> None:
    sampler = EpochSampler(10, 10, seed=0)
    assert [key[0] for key in sampler] == [0] * 10
    assert [key[1] for key in sampler] == sampler.order(0).tolist()


@pytest.mark.parametrize("start", [0, 1, 17, 39, 40])
def test_set_epoch_start_yields_the_tail_of_the_epoch(start: int) -> None:
    sampler = EpochSampler(50, 40, seed=3)
    sampler.set_epoch(5)
    full = list(sampler)
    sampler.set_epoch(5, start=start)
    assert list(sampler) == full[start:]
    assert len(sampler) == 40 - start


def test_set_epoch_resets_start() -> None:
    sampler = EpochSampler(20, 20, seed=0)
    sampler.set_epoch(1, start=5)
    sampler.set_epoch(2)
    assert len(list(sampler)) == 20


@pytest.mark.parametrize("samples_per_epoch", [0, 101])
def test_samples_per_epoch_out_of_range(samples_per_epoch: int) -> None:
    with pytest.raises(ValueError, match=r"outside 1\.\.100"):
        EpochSampler(100, samples_per_epoch, seed=0)


def _augmented(seed: int = 0) -> AugmentedDataset:
    images = torch.randint(0, 256, (8, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    base = TensorImageDataset(images.to(torch.uint8), torch.arange(8) % 10)
    return AugmentedDataset(
        base, build_transform(DataConfig(augmentations="random_crop,horizontal_flip"), 32), seed
    )


def test_keyed_items_do_not_depend_on_the_global_rng() -> None:
    dataset = _augmented()
    torch.manual_seed(1)
    first, label_first = dataset[(4, 3)]
    torch.manual_seed(12345)
    torch.rand(100)
    second, label_second = dataset[(4, 3)]
    assert torch.equal(first, second)
    assert label_first == label_second == 3


def test_keyed_items_depend_on_epoch_index_and_seed() -> None:
    # Over several epochs the random crop must land somewhere else at least once.
    dataset = _augmented()
    reference, _ = dataset[(0, 2)]
    assert any(not torch.equal(reference, dataset[(epoch, 2)][0]) for epoch in range(1, 6))
    other_seed = _augmented(seed=1)
    assert any(
        not torch.equal(dataset[(epoch, 2)][0], other_seed[(epoch, 2)][0]) for epoch in range(6)
    )


def test_keyed_items_leave_the_global_rng_untouched() -> None:
    dataset = _augmented()
    torch.manual_seed(99)
    before = torch.get_rng_state()
    for epoch in range(3):
        dataset[(epoch, 5)]
    assert torch.equal(torch.get_rng_state(), before)


def test_integer_items_apply_the_transform() -> None:
    base_images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    dataset = AugmentedDataset(
        TensorImageDataset(base_images, torch.arange(4)), build_transform(None, 32), 0
    )
    image, label = dataset[2]
    assert len(dataset) == 4
    assert label == 2
    assert image.dtype == torch.float32
    assert torch.equal((image * 255).round().to(torch.uint8), base_images[2])


@pytest.fixture(scope="module")
def small_bundle() -> tuple[DataBundle, DataConfig]:
    cfg = DataConfig(dataset="synthetic", synthetic_size=200, batch_size=16)
    return build_data(cfg, seed=0), cfg


def _batches(data: DataBundle, cfg: DataConfig, num_workers: int, epoch: int, start: int = 0):
    loader = create_train_loader(
        data,
        cfg.model_copy(update={"num_workers": num_workers, "loader": "classic"}),
        seed=5,
        samples_per_epoch=96,
        device=torch.device("cpu"),
    )
    loader.set_epoch(epoch, start_batch=start // cfg.batch_size)
    return [(images.clone(), labels.clone()) for images, labels in loader]


def test_loader_batches_do_not_depend_on_num_workers(small_bundle) -> None:
    data, cfg = small_bundle
    in_process = _batches(data, cfg, num_workers=0, epoch=2)
    with_workers = _batches(data, cfg, num_workers=2, epoch=2)
    assert len(in_process) == len(with_workers) == 96 // 16
    for (images_a, labels_a), (images_b, labels_b) in zip(in_process, with_workers, strict=True):
        assert images_a.shape == (16, 3, 32, 32)
        assert images_a.dtype == torch.float32
        assert torch.equal(images_a, images_b)
        assert torch.equal(labels_a, labels_b)


def test_resumed_loader_repeats_the_tail_of_the_epoch(small_bundle) -> None:
    data, cfg = small_bundle
    full = _batches(data, cfg, num_workers=0, epoch=1)
    resumed = _batches(data, cfg, num_workers=0, epoch=1, start=2 * 16)
    assert len(resumed) == len(full) - 2
    for (images_a, labels_a), (images_b, labels_b) in zip(full[2:], resumed, strict=True):
        assert torch.equal(images_a, images_b)
        assert torch.equal(labels_a, labels_b)


def test_loader_batches_are_the_sampled_training_items(small_bundle) -> None:
    data, cfg = small_bundle
    sampler = EpochSampler(data.num_train, 96, seed=5)
    sampler.set_epoch(0)
    expected_labels = [data.train[index][1] for _, index in sampler]
    batches = _batches(data, cfg, num_workers=0, epoch=0)
    assert torch.cat([labels for _, labels in batches]).tolist() == expected_labels
