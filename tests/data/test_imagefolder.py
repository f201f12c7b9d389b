"""Class-per-folder image trees, written as small PNGs into tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionops.config import DataConfig
from visionops.data import build_data, create_eval_loader
from visionops.data.imagefolder import load_imagefolder
from visionops.data.transforms import build_transform
from visionops.errors import DataError

CLASSES = ("cat", "dog", "emu")


def _pixels(seed: int, height: int, width: int) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_tree(
    root: Path,
    per_class: int,
    classes: tuple[str, ...] = CLASSES,
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
) -> Path:
    """``root/<class>/<i>.png`` images of ``size`` (height, width)."""
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = _pixels(seed + 1000 * k + i, *size)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


def test_train_and_test_folders(tmp_path: Path) -> None:
    write_tree(tmp_path / "train", per_class=4)
    write_tree(tmp_path / "test", per_class=2, seed=500)
    train, test, classes = load_imagefolder(tmp_path)
    assert classes == CLASSES
    assert len(train) == 12
    assert test is not None
    assert len(test) == 6
    assert tuple(test.classes) == CLASSES
    assert sorted(train.targets) == [0] * 4 + [1] * 4 + [2] * 4
    assert sorted(test.targets) == [0, 0, 1, 1, 2, 2]


def test_items_are_the_pixels_written(tmp_path: Path) -> None:
    write_tree(tmp_path, per_class=2)
    train, _, _ = load_imagefolder(tmp_path)
    # ImageFolder sorts classes and files: item 3 is dog/001.png.
    image, label = train[3]
    assert label == CLASSES.index("dog")
    as_tensor = build_transform(None, 32)(image)
    expected = torch.from_numpy(_pixels(1001, 32, 32)).permute(2, 0, 1)
    assert torch.equal((as_tensor * 255).round().to(torch.uint8), expected)


def test_build_data_with_train_and_test(tmp_path: Path) -> None:
    write_tree(tmp_path / "train", per_class=10)
    write_tree(tmp_path / "test", per_class=3, seed=500)
    cfg = DataConfig(dataset="imagefolder", data_dir=tmp_path, val_fraction=0.2)
    data = build_data(cfg, seed=0)
    assert data.classes == CLASSES
    assert data.num_classes == 3
    assert data.test is not None
    assert len(data.test) == 9
    assert data.split_names == ["train", "val", "test"]
    assert len(data.train) == 24
    assert len(data.val) == 6


def test_single_tree_has_no_test_split(tmp_path: Path) -> None:
    write_tree(tmp_path, per_class=7)
    train, test, classes = load_imagefolder(tmp_path)
    assert test is None
    assert classes == CLASSES
    assert len(train) == 21

    cfg = DataConfig(dataset="imagefolder", data_dir=tmp_path, val_fraction=0.25)
    data = build_data(cfg, seed=1)
    assert data.test is None
    assert data.split_names == ["train", "val"]
    assert len(data.val) == round(21 * 0.25)
    assert len(data.train) + len(data.val) == 21
    assert sorted(data.train.indices + data.val.indices) == list(range(21))
    with pytest.raises(DataError, match="no 'test' split"):
        data.split("test")


def test_other_image_sizes_come_out_at_image_size(tmp_path: Path) -> None:
    write_tree(tmp_path, per_class=4, size=(40, 48))
    cfg = DataConfig(
        dataset="imagefolder", data_dir=tmp_path, val_fraction=0.25, eval_batch_size=8, cache="off"
    )
    data = build_data(cfg, seed=0)
    raw, _ = data.val[0]
    assert raw.size == (48, 40)  # PIL: (width, height), before any transform

    image = build_transform(None, cfg.image_size)(raw)
    assert image.shape == (3, 32, 32)
    assert image.dtype == torch.float32
    assert float(image.min()) >= 0.0
    assert float(image.max()) <= 1.0

    batches = list(create_eval_loader(data, "val", cfg, torch.device("cpu")))
    assert [tuple(images.shape) for images, _ in batches] == [(3, 3, 32, 32)]
    # The statistics were computed on resized images as well.
    assert len(data.mean) == 3
    assert all(0 < m < 1 for m in data.mean)


def test_mismatched_class_folders_are_rejected(tmp_path: Path) -> None:
    write_tree(tmp_path / "train", per_class=2)
    write_tree(tmp_path / "test", per_class=2, classes=("cat", "dog", "fox"))
    with pytest.raises(DataError) as info:
        load_imagefolder(tmp_path)
    message = str(info.value)
    assert "same class folders" in message
    assert "fox" in message
    assert "emu" in message


def test_missing_root_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(DataError) as info:
        load_imagefolder(missing)
    assert str(missing) in str(info.value)
    assert "--data-dir" in str(info.value)


def test_missing_root_through_build_data(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(DataError, match="absent"):
        build_data(DataConfig(dataset="imagefolder", data_dir=missing), seed=0)


def test_a_folder_without_class_folders_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a class-per-folder image tree"):
        load_imagefolder(tmp_path / "empty")


def test_a_test_folder_alone_is_a_test_split_without_training_images(tmp_path: Path) -> None:
    write_tree(tmp_path / "test", per_class=2, seed=500)
    train, test, classes = load_imagefolder(tmp_path)
    assert train is None
    assert test is not None and len(test) == 6
    assert classes == CLASSES

    cfg = DataConfig(dataset="imagefolder", data_dir=tmp_path, cache="off", eval_batch_size=4)
    data = build_data(cfg, seed=0, need_train=False)
    assert data.split_names == ["test"]
    assert data.classes == CLASSES
    batches = list(create_eval_loader(data, "test", cfg, torch.device("cpu")))
    assert [len(labels) for _, labels in batches] == [4, 2]
    assert sorted(torch.cat([labels for _, labels in batches]).tolist()) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(DataError, match="no 'val' split; available: test"):
        data.split("val")


def test_training_on_a_test_folder_alone_asks_for_train_or_class_folders(tmp_path: Path) -> None:
    write_tree(tmp_path / "test", per_class=2)
    with pytest.raises(DataError) as info:
        build_data(DataConfig(dataset="imagefolder", data_dir=tmp_path, cache="off"), seed=0)
    message = str(info.value)
    assert "only a test split and no training images" in message
    assert "DATA_DIR/train/<class>/" in message and "DATA_DIR/<class>/" in message


def test_a_test_folder_next_to_class_folders_is_ambiguous(tmp_path: Path) -> None:
    write_tree(tmp_path / "test", per_class=2)
    write_tree(tmp_path, per_class=2, classes=("cat",))
    with pytest.raises(DataError, match=r"test/ next to other folders \(cat\) but no train/"):
        load_imagefolder(tmp_path)
