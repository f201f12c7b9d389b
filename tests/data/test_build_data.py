"""build_data on the synthetic dataset: splits, statistics and the DataBundle API."""

from __future__ import annotations

import pytest
import torch

from visionops.config import DataConfig
from visionops.data import DataBundle, build_data, create_eval_loader
from visionops.data.synthetic import CLASS_NAMES, make_synthetic
from visionops.errors import DataError


def _synthetic(size: int = 200, val_fraction: float = 0.1, seed: int = 0) -> DataBundle:
    cfg = DataConfig(dataset="synthetic", synthetic_size=size, val_fraction=val_fraction)
    return build_data(cfg, seed=seed)


@pytest.mark.parametrize(
    ("size", "val_fraction"), [(200, 0.1), (200, 0.25), (137, 0.1), (50, 0.5), (20, 0.01)]
)
def test_validation_size(size: int, val_fraction: float) -> None:
    data = _synthetic(size, val_fraction)
    expected = max(1, round(size * val_fraction))
    assert len(data.val) == expected
    assert len(data.train) == data.num_train == size - expected


def test_val_fraction_that_leaves_no_training_images() -> None:
    with pytest.raises(DataError, match="leaves no training images out of 20"):
        _synthetic(20, 0.99)


def test_val_fraction_zero_trains_on_every_image_and_has_no_val_split() -> None:
    data = _synthetic(200, 0.0)
    assert data.split_names == ["train"]
    assert len(data.train) == data.num_train == 200
    images, _ = make_synthetic(200, seed=0)
    assert torch.equal(data.train[37][0], images[37])  # the source's own order
    with pytest.raises(DataError, match=r"^this dataset has no 'val' split; available: train$"):
        data.split("val")
    assert data.test is None


def test_a_positive_fraction_carves_the_split_it_always_did() -> None:
    # Pinned to the expression runs made before val_fraction 0 existed, so they reproduce.
    order = torch.randperm(200, generator=torch.Generator().manual_seed(5)).tolist()
    data = _synthetic(200, 0.1, seed=5)
    assert data.val.indices == order[:20]
    assert data.train.indices == order[20:]


def test_train_and_val_are_disjoint_and_cover_everything() -> None:
    data = _synthetic(200, 0.1)
    train, val = set(data.train.indices), set(data.val.indices)
    assert not train & val
    assert train | val == set(range(200))
    assert len(data.train.indices) == len(train)  # no index twice


def test_split_depends_only_on_the_seed() -> None:
    a, b, c = _synthetic(seed=3), _synthetic(seed=3), _synthetic(seed=4)
    assert a.train.indices == b.train.indices
    assert a.val.indices == b.val.indices
    assert a.val.indices != c.val.indices
    assert set(a.val.indices) != set(c.val.indices)


def test_items_are_the_generated_images() -> None:
    data = _synthetic(200, 0.1, seed=2)
    images, labels = make_synthetic(200, seed=2)
    index = data.val.indices[0]
    image, label = data.val[0]
    assert torch.equal(image, images[index])
    assert label == int(labels[index])


def test_bundle_metadata() -> None:
    data = _synthetic()
    assert data.classes == CLASS_NAMES
    assert data.num_classes == 10
    assert data.image_size == 32
    assert data.test is None
    assert data.split_names == ["train", "val"]
    assert data.split("train") is data.train
    assert data.split("val") is data.val


def test_channel_statistics() -> None:
    data = _synthetic()
    assert isinstance(data.mean, tuple)
    assert isinstance(data.std, tuple)
    assert len(data.mean) == len(data.std) == 3
    assert all(0 < m < 1 for m in data.mean)
    assert all(0 < s < 1 for s in data.std)
    # They are the statistics of the (un-augmented) training images.
    images = torch.stack([data.train[i][0] for i in range(len(data.train))]).float() / 255
    expected_mean = images.mean(dim=(0, 2, 3))
    expected_std = images.std(dim=(0, 2, 3))
    assert torch.allclose(torch.tensor(data.mean), expected_mean, atol=1e-4)
    assert torch.allclose(torch.tensor(data.std), expected_std, atol=1e-4)


def test_statistics_are_deterministic() -> None:
    assert _synthetic(seed=1).mean == _synthetic(seed=1).mean
    assert _synthetic(seed=1).std == _synthetic(seed=1).std


def test_missing_test_split_lists_the_available_ones() -> None:
    data = _synthetic()
    with pytest.raises(DataError) as info:
        data.split("test")
    assert str(info.value) == "this dataset has no 'test' split; available: train, val"


def test_unknown_split_name() -> None:
    with pytest.raises(DataError, match="no 'holdout' split; available: train, val"):
        _synthetic().split("holdout")


@pytest.mark.parametrize("loader", ["classic", "auto"])
def test_eval_loader_keeps_dataset_order(loader: str) -> None:
    data = _synthetic()
    cfg = DataConfig(dataset="synthetic", synthetic_size=200, eval_batch_size=8, loader=loader)
    batches = list(create_eval_loader(data, "val", cfg, torch.device("cpu")))
    assert [len(labels) for _, labels in batches] == [8, 8, 4]
    images = torch.cat([images for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    assert images.dtype == torch.float32
    assert labels.tolist() == [data.val[i][1] for i in range(20)]
    expected = torch.stack([data.val[i][0] for i in range(20)])
    assert torch.equal((images * 255).round().to(torch.uint8), expected)
