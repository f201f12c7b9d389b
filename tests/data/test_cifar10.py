"""CIFAR-10 from torchvision's on-disk layout, written by the tests into tmp_path."""

from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10

from visionops.config import DataConfig
from visionops.data import build_data
from visionops.data.cifar10 import load_cifar10
from visionops.errors import DataError

PER_BATCH = 20
CLASS_NAMES = [f"kind_{k}" for k in range(10)]  # not the real names: they must come from disk


def _batch_images(batch: int) -> np.ndarray:
    """Known pixels: N x 3072 rows in CIFAR's planar order (1024 R, 1024 G, 1024 B)."""
    return np.random.RandomState(batch).randint(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)


def _batch_labels(batch: int) -> list[int]:
    return [(j * 3 + batch) % 10 for j in range(PER_BATCH)]


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [(f"data_batch_{b}", b) for b in range(1, 6)] + [("test_batch", 0)]
    for name, batch in names:
        _dump(
            folder / name,
            {
                "batch_label": f"{name} of 6",
                "labels": _batch_labels(batch),
                "data": _batch_images(batch),
                "filenames": [f"{name}_{j}.png" for j in range(PER_BATCH)],
            },
        )
    _dump(
        folder / "batches.meta",
        {"label_names": CLASS_NAMES, "num_cases_per_batch": PER_BATCH, "num_vis": 3072},
    )
    return root


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    return write_cifar10(tmp_path / "data")


def test_loads_files_that_differ_from_the_release(cifar_dir: Path) -> None:
    train, test, classes = load_cifar10(cifar_dir, download=False)
    assert len(train) == 5 * PER_BATCH
    assert len(test) == PER_BATCH
    assert classes == tuple(CLASS_NAMES)


class TestLoad:
    def test_counts_and_class_names(self, cifar_dir: Path) -> None:
        train, test, classes = load_cifar10(cifar_dir, download=False)
        assert len(train) == 5 * PER_BATCH
        assert len(test) == PER_BATCH
        assert classes == tuple(CLASS_NAMES)

    def test_labels_in_batch_order(self, cifar_dir: Path) -> None:
        train, test, _ = load_cifar10(cifar_dir, download=False)
        expected_train = [label for b in range(1, 6) for label in _batch_labels(b)]
        assert train.labels.tolist() == expected_train
        assert test.labels.tolist() == _batch_labels(0)
        assert train.labels.dtype == torch.int64
        _, label = train[PER_BATCH + 4]
        assert label == _batch_labels(2)[4]
        assert isinstance(label, int)

    def test_pixels_round_trip_exactly(self, cifar_dir: Path) -> None:
        train, test, _ = load_cifar10(cifar_dir, download=False)
        assert train.images.shape == (5 * PER_BATCH, 3, 32, 32)
        assert train.images.dtype == torch.uint8
        # Image 7 of data_batch_3 is train image 2 * 20 + 7.
        row = _batch_images(3)[7]
        image, _ = train[2 * PER_BATCH + 7]
        assert image.shape == (3, 32, 32)
        assert torch.equal(image, torch.from_numpy(row.reshape(3, 32, 32)))
        # Channel planes and row-major pixel order, spelled out for one pixel.
        r, c = 5, 17
        assert int(image[0, r, c]) == row[r * 32 + c]
        assert int(image[1, r, c]) == row[1024 + r * 32 + c]
        assert int(image[2, r, c]) == row[2048 + r * 32 + c]
        # The whole test split, too.
        expected_test = torch.from_numpy(_batch_images(0).reshape(-1, 3, 32, 32))
        assert torch.equal(test.images, expected_test)

    def test_build_data_splits_train_and_keeps_test(self, cifar_dir: Path) -> None:
        cfg = DataConfig(dataset="cifar10", data_dir=cifar_dir, download=False, val_fraction=0.2)
        data = build_data(cfg, seed=0)
        assert len(data.train) == 80
        assert len(data.val) == 20
        assert data.test is not None
        assert len(data.test) == PER_BATCH
        assert data.classes == tuple(CLASS_NAMES)
        assert data.num_classes == 10
        assert data.split_names == ["train", "val", "test"]
        assert data.split("test") is data.test
        assert sorted(data.train.indices + data.val.indices) == list(range(100))
        # Uniform random pixels: the per-channel mean is near 0.5 and the std near 0.29.
        assert len(data.mean) == len(data.std) == 3
        for mean, std in zip(data.mean, data.std, strict=True):
            assert mean == pytest.approx(0.5, abs=0.02)
            assert std == pytest.approx(1 / 12**0.5, abs=0.02)

    def test_an_existing_folder_is_not_downloaded_again(
        self, cifar_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def fail(self: CIFAR10) -> None:
            raise AssertionError("download must not be attempted")

        monkeypatch.setattr(CIFAR10, "download", fail)
        train, _, _ = load_cifar10(cifar_dir, download=True)
        assert len(train) == 5 * PER_BATCH


def test_missing_folder_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path, download=False)
    message = str(info.value)
    assert "--data-dir" in message
    assert "imagefolder" in message
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "download=false" in message


def test_missing_folder_without_download_through_build_data(tmp_path: Path) -> None:
    cfg = DataConfig(dataset="cifar10", data_dir=tmp_path, download=False)
    with pytest.raises(DataError, match="--data-dir"):
        build_data(cfg, seed=0)


def test_failed_download_becomes_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def offline(self: CIFAR10) -> None:
        calls.append(str(self.root))
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(CIFAR10, "download", offline)
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path, download=True)
    assert calls == [str(tmp_path)]
    message = str(info.value)
    assert "--data-dir" in message
    assert "imagefolder" in message
    assert "download failed" in message
    assert "offline" in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_incomplete_folder_is_a_data_error(cifar_dir: Path) -> None:
    (cifar_dir / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError) as info:
        load_cifar10(cifar_dir, download=False)
    assert "incomplete" in str(info.value)
    assert str(cifar_dir / "cifar-10-batches-py") in str(info.value)
