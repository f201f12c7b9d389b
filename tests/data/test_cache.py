"""The decoded-image cache: imagefolder and CIFAR-10 sources written by the tests into tmp_path.

Every test points ``cache_dir`` at its own tmp_path folder, never at ``~/.cache``.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from visionops.cli import main
from visionops.config import DataConfig
from visionops.data import build_data
from visionops.data.cache import CACHE_FORMAT, CacheInfo, cache_entries, decoded_source
from visionops.data.transforms import build_transform
from visionops.errors import ConfigError, DataError

CLASSES = ("cat", "dog", "emu")
SIZE = 8  # the smallest image_size DataConfig accepts


# --------------------------------------------------------------------------- helpers


def _pixels(seed: int, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """Known H x W x 3 uint8 pixels."""
    return np.random.RandomState(seed).randint(0, 256, size=(height, width, 3), dtype=np.uint8)


def _seed(class_index: int, i: int, seed: int = 0) -> int:
    return seed + 1000 * class_index + i


def write_tree(
    root: Path,
    per_class: int,
    classes: tuple[str, ...] = CLASSES,
    size: tuple[int, int] = (SIZE, SIZE),
    seed: int = 0,
) -> Path:
    """``root/<class>/<i>.png`` images of ``size`` (height, width); PNG, so lossless."""
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(_pixels(_seed(k, i, seed), *size)).save(root / name / f"{i:03d}.png")
    return root


def tree_tensors(
    per_class: int,
    classes: tuple[str, ...] = CLASSES,
    size: tuple[int, int] = (SIZE, SIZE),
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``write_tree`` wrote, as N x 3 x H x W uint8 images and labels, in
    ImageFolder's order (classes sorted, then files sorted)."""
    images = [
        torch.from_numpy(_pixels(_seed(k, i, seed), *size)).permute(2, 0, 1)
        for k in range(len(classes))
        for i in range(per_class)
    ]
    labels = [k for k in range(len(classes)) for _ in range(per_class)]
    return torch.stack(images), torch.tensor(labels)


def image_cfg(data_dir: Path, cache_dir: Path, **fields: object) -> DataConfig:
    values: dict[str, object] = dict(
        dataset="imagefolder", data_dir=data_dir, cache_dir=cache_dir, cache="disk", image_size=SIZE
    )
    values.update(fields)
    return DataConfig(**values)  # type: ignore[arg-type]


def cache_folders(cache_dir: Path) -> list[Path]:
    """Every entry under cache_dir (staging folders included, to catch leftovers)."""
    return sorted(cache_dir.iterdir()) if cache_dir.exists() else []


def touch_later(path: Path, seconds: int = 10) -> None:
    """Move ``path``'s modification time forward, whatever the filesystem's resolution."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + seconds * 10**9))


CIFAR_PER_BATCH = 4
CIFAR_CLASSES = [f"kind_{k}" for k in range(10)]


def _cifar_rows(batch: int) -> np.ndarray:
    """N x 3072 rows in CIFAR's planar order (1024 R, 1024 G, 1024 B)."""
    return np.random.RandomState(100 + batch).randint(
        0, 256, size=(CIFAR_PER_BATCH, 3072), dtype=np.uint8
    )


def _cifar_labels(batch: int) -> list[int]:
    return [(j * 3 + batch) % 10 for j in range(CIFAR_PER_BATCH)]


def write_cifar10(root: Path) -> Path:
    """CIFAR-10 in torchvision's layout (``root/cifar-10-batches-py``); test_batch is batch 0."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = [(f"data_batch_{b}", b) for b in range(1, 6)] + [("test_batch", 0)]
    for name, batch in batches:
        content = {
            "batch_label": name,
            "labels": _cifar_labels(batch),
            "data": _cifar_rows(batch),
            "filenames": [f"{name}_{j}.png" for j in range(CIFAR_PER_BATCH)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(content, handle, protocol=2)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": CIFAR_PER_BATCH}, handle)
    return root


def cifar_tensors(batches: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.concatenate([_cifar_rows(b) for b in batches]).reshape(-1, 3, 32, 32)
    labels = [label for b in batches for label in _cifar_labels(b)]
    return torch.from_numpy(images), torch.tensor(labels)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# --------------------------------------------------------------------------- imagefolder, disk


def test_first_call_creates_one_folder_and_the_second_reuses_it(
    tmp_path: Path, cache_dir: Path
) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=4)
    cfg = image_cfg(data_dir, cache_dir)

    first = decoded_source(cfg)
    info = first.info
    assert isinstance(info, CacheInfo)
    assert info.reused is False
    assert len(info.key) == 64
    assert all(c in "0123456789abcdef" for c in info.key)
    folders = cache_folders(cache_dir)
    assert folders == [cache_dir / f"imagefolder-{info.key[:20]}"]  # no staging leftovers
    assert Path(info.location) == folders[0]
    assert sorted(p.name for p in folders[0].iterdir()) == [
        "meta.json",
        "train_images.npy",
        "train_labels.npy",
    ]
    assert info.num_images == {"train": 12}
    assert info.nbytes == 12 * 3 * SIZE * SIZE
    assert info.seconds >= 0
    assert first.classes == CLASSES
    assert set(first.splits) == {"train"}

    meta = json.loads((folders[0] / "meta.json").read_text())
    assert meta["key"] == info.key
    assert meta["format"] == CACHE_FORMAT
    assert meta["classes"] == list(CLASSES)
    assert meta["splits"] == {"train": 12}
    assert meta["dataset"] == "imagefolder"
    assert meta["image_size"] == SIZE
    assert meta["source"] == str(data_dir.resolve())

    # The arrays on disk are the decoded images.
    on_disk = np.load(folders[0] / "train_images.npy")
    assert on_disk.dtype == np.uint8
    assert on_disk.shape == (12, 3, SIZE, SIZE)
    assert np.load(folders[0] / "train_labels.npy").tolist() == [0] * 4 + [1] * 4 + [2] * 4

    second = decoded_source(cfg)
    assert second.info.reused is True
    assert second.info.key == info.key
    assert second.info.location == info.location
    assert second.info.num_images == info.num_images
    assert second.info.nbytes == info.nbytes
    assert second.classes == CLASSES
    assert cache_folders(cache_dir) == folders  # nothing new written
    assert torch.equal(second.splits["train"].images, first.splits["train"].images)
    assert torch.equal(second.splits["train"].labels, first.splits["train"].labels)


def test_decoded_images_are_the_source_pixels_in_class_order(
    tmp_path: Path, cache_dir: Path
) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=3)
    expected_images, expected_labels = tree_tensors(per_class=3)

    for _ in range(2):  # created, then reused
        split = decoded_source(image_cfg(data_dir, cache_dir)).splits["train"]
        assert split.images.dtype == torch.uint8
        assert split.images.shape == (9, 3, SIZE, SIZE)
        assert torch.equal(split.images, expected_images)
        assert split.labels.tolist() == expected_labels.tolist()
        # The same pixels PIL decodes from the files.
        pil = np.array(Image.open(data_dir / "dog" / "002.png").convert("RGB"))
        image, label = split[5]  # dog/002.png: classes sorted, then files sorted
        assert label == CLASSES.index("dog")
        assert isinstance(label, int)
        assert torch.equal(image, torch.from_numpy(pil).permute(2, 0, 1))


def test_cache_auto_is_the_disk_cache_for_files(tmp_path: Path, cache_dir: Path) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=2)
    info = decoded_source(image_cfg(data_dir, cache_dir, cache="auto")).info
    assert info.reused is False
    assert Path(info.location).parent == cache_dir
    assert (Path(info.location) / "meta.json").is_file()
    again = decoded_source(image_cfg(data_dir, cache_dir, cache="disk")).info
    assert again.reused is True
    assert again.location == info.location


def test_cache_dir_with_a_tilde_is_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    data_dir = write_tree(tmp_path / "images", per_class=2)
    info = decoded_source(image_cfg(data_dir, Path("~/vcache"))).info
    assert Path(info.location).parent == home / "vcache"
    assert (Path(info.location) / "meta.json").is_file()
    assert not (tmp_path / "~").exists()


# --------------------------------------------------------------------------- invalidation


def _first(data_dir: Path, cache_dir: Path, **fields: object) -> CacheInfo:
    info = decoded_source(image_cfg(data_dir, cache_dir, **fields)).info
    assert info.reused is False
    return info


def test_rewriting_an_image_with_other_pixels_makes_a_new_cache(
    tmp_path: Path, cache_dir: Path
) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=3)
    old = _first(data_dir, cache_dir)

    target = data_dir / "cat" / "001.png"
    old_size = target.stat().st_size
    new_pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    new_pixels[:, :, 1] = 200  # flat: compresses to a different file size
    Image.fromarray(new_pixels).save(target)
    assert target.stat().st_size != old_size
    touch_later(target)

    new = decoded_source(image_cfg(data_dir, cache_dir))
    assert new.info.reused is False
    assert new.info.key != old.key
    assert new.info.location != old.location
    assert len(cache_folders(cache_dir)) == 2
    assert new.info.num_images == {"train": 9}
    expected, _ = tree_tensors(per_class=3)
    expected[1] = torch.from_numpy(new_pixels).permute(2, 0, 1)  # cat/001.png
    assert torch.equal(new.splits["train"].images, expected)
    # The old folder still holds the old pixels; the new one is reused from now on.
    old_images = np.load(Path(old.location) / "train_images.npy")
    assert torch.equal(torch.from_numpy(old_images), tree_tensors(per_class=3)[0])
    assert decoded_source(image_cfg(data_dir, cache_dir)).info.location == new.info.location


def test_touching_a_file_makes_a_new_cache(tmp_path: Path, cache_dir: Path) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=2)
    old = _first(data_dir, cache_dir)
    touch_later(data_dir / "emu" / "000.png")  # same bytes, later mtime
    new = decoded_source(image_cfg(data_dir, cache_dir))
    assert new.info.reused is False
    assert new.info.key != old.key
    assert len(cache_folders(cache_dir)) == 2
    assert torch.equal(new.splits["train"].images, tree_tensors(per_class=2)[0])


def test_adding_a_file_makes_a_new_cache_with_one_more_image(
    tmp_path: Path, cache_dir: Path
) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=3)
    old = _first(data_dir, cache_dir)

    extra = _pixels(4242)
    Image.fromarray(extra).save(data_dir / "emu" / "zzz.png")
    new = decoded_source(image_cfg(data_dir, cache_dir))
    assert new.info.reused is False
    assert new.info.key != old.key
    assert new.info.num_images == {"train": 10}
    assert new.splits["train"].labels.tolist() == [0] * 3 + [1] * 3 + [2] * 4
    assert torch.equal(new.splits["train"].images[-1], torch.from_numpy(extra).permute(2, 0, 1))
    meta = json.loads((Path(new.info.location) / "meta.json").read_text())
    assert meta["splits"] == {"train": 10}


def test_removing_a_file_makes_a_new_cache_with_one_image_less(
    tmp_path: Path, cache_dir: Path
) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=3)
    old = _first(data_dir, cache_dir)
    (data_dir / "cat" / "000.png").unlink()
    new = decoded_source(image_cfg(data_dir, cache_dir)).info
    assert new.reused is False
    assert new.key != old.key
    assert new.num_images == {"train": 8}


def test_another_image_size_makes_a_new_cache(tmp_path: Path, cache_dir: Path) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=2, size=(16, 16))
    at_8 = _first(data_dir, cache_dir, image_size=8)
    at_12 = decoded_source(image_cfg(data_dir, cache_dir, image_size=12))
    assert at_12.info.reused is False
    assert at_12.info.key != at_8.key
    assert at_12.splits["train"].images.shape == (6, 3, 12, 12)
    assert at_12.info.nbytes == 6 * 3 * 12 * 12
    assert json.loads((Path(at_12.info.location) / "meta.json").read_text())["image_size"] == 12
    # Both sizes stay cached side by side and are each reused.
    assert decoded_source(image_cfg(data_dir, cache_dir, image_size=8)).info.reused is True
    assert decoded_source(image_cfg(data_dir, cache_dir, image_size=12)).info.reused is True
    assert len(cache_folders(cache_dir)) == 2


def test_the_key_does_not_depend_on_where_the_cache_is(tmp_path: Path) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=2)
    a = _first(data_dir, tmp_path / "cache_a")
    b = _first(data_dir, tmp_path / "cache_b")
    assert a.key == b.key
    assert Path(a.location).name == Path(b.location).name


# --------------------------------------------------------------------------- resizing, memory


def test_images_of_another_size_are_resized_in_the_cache(tmp_path: Path, cache_dir: Path) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=3, size=(20, 12))
    decoded = decoded_source(image_cfg(data_dir, cache_dir, image_size=10))
    images = decoded.splits["train"].images
    assert images.dtype == torch.uint8
    assert images.shape == (9, 3, 10, 10)
    assert np.load(Path(decoded.info.location) / "train_images.npy").shape == (9, 3, 10, 10)
    # Resized exactly as the training transform resizes the source image.
    source, _ = tree_tensors(per_class=3, size=(20, 12))
    expected = TF.resize(source, [10, 10], antialias=True)
    assert torch.equal(images, expected)


def test_memory_cache_writes_nothing_and_matches_the_disk_cache(
    tmp_path: Path, cache_dir: Path
) -> None:
    data_dir = write_tree(tmp_path / "train", per_class=3, size=(12, 12))
    write_tree(tmp_path / "test", per_class=2, size=(12, 12), seed=500)

    memory = decoded_source(image_cfg(tmp_path, cache_dir, cache="memory"))
    assert memory.info.location == "memory"
    assert memory.info.reused is False
    assert not cache_dir.exists()
    assert memory.info.num_images == {"train": 9, "test": 6}
    assert data_dir.is_dir()

    disk = decoded_source(image_cfg(tmp_path, cache_dir, cache="disk"))
    assert disk.info.key == memory.info.key
    assert disk.info.nbytes == memory.info.nbytes
    assert disk.classes == memory.classes
    for name in ("train", "test"):
        assert torch.equal(disk.splits[name].images, memory.splits[name].images)
        assert torch.equal(disk.splits[name].labels, memory.splits[name].labels)

    # Memory is never reused and never reads the disk cache.
    assert decoded_source(image_cfg(tmp_path, cache_dir, cache="memory")).info.reused is False


def test_synthetic_is_not_decoded(tmp_path: Path, cache_dir: Path) -> None:
    cfg = DataConfig(dataset="synthetic", cache="disk", cache_dir=cache_dir, image_size=SIZE)
    with pytest.raises(ConfigError, match="'synthetic' is generated in memory"):
        decoded_source(cfg)
    # image_size=16: the synthetic generator needs at least 12 pixels for its textures.
    data = build_data(cfg.model_copy(update={"synthetic_size": 20, "image_size": 16}), seed=0)
    assert data.cache is None
    assert not cache_dir.exists()


def test_cli_refuses_to_cache_a_generated_dataset(
    cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["data", "cache", "--dataset", "synthetic", "--cache-dir", str(cache_dir)]
    assert main(argv) == 2
    assert "nothing to cache; datasets read from files: cifar10, imagefolder" in (
        capsys.readouterr().err
    )
    assert not cache_dir.exists()


# --------------------------------------------------------------------------- test split


def test_a_test_folder_alone_is_cached_and_evaluated(tmp_path: Path, cache_dir: Path) -> None:
    data_dir = tmp_path / "data"
    write_tree(data_dir / "test", per_class=2, seed=500)
    decoded = decoded_source(image_cfg(data_dir, cache_dir))
    assert decoded.info.num_images == {"test": 6}
    folder = Path(decoded.info.location)
    assert json.loads((folder / "meta.json").read_text())["splits"] == {"test": 6}

    data = build_data(image_cfg(data_dir, cache_dir), seed=0, need_train=False)
    assert data.cache is not None and data.cache.reused is True
    assert data.split_names == ["test"]
    tensors = data.tensors("test")
    assert tensors is not None
    test_images, test_labels = tree_tensors(per_class=2, seed=500)
    assert torch.equal(tensors[0], test_images)
    assert tensors[1].tolist() == test_labels.tolist()
    with pytest.raises(DataError, match="only a test split and no training images"):
        build_data(image_cfg(data_dir, cache_dir), seed=0)


def test_a_test_folder_is_cached_as_the_test_split(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path / "train", per_class=4)
    write_tree(tmp_path / "test", per_class=2, seed=500)
    decoded = decoded_source(image_cfg(tmp_path, cache_dir))
    folder = Path(decoded.info.location)
    assert decoded.info.num_images == {"train": 12, "test": 6}
    assert decoded.info.nbytes == 18 * 3 * SIZE * SIZE
    assert sorted(p.name for p in folder.iterdir()) == [
        "meta.json",
        "test_images.npy",
        "test_labels.npy",
        "train_images.npy",
        "train_labels.npy",
    ]
    assert json.loads((folder / "meta.json").read_text())["splits"] == {"train": 12, "test": 6}

    test_images, test_labels = tree_tensors(per_class=2, seed=500)
    train_images, train_labels = tree_tensors(per_class=4)
    for source in (decoded, decoded_source(image_cfg(tmp_path, cache_dir))):
        assert torch.equal(source.splits["test"].images, test_images)
        assert source.splits["test"].labels.tolist() == test_labels.tolist()
        assert torch.equal(source.splits["train"].images, train_images)
        assert source.splits["train"].labels.tolist() == train_labels.tolist()

    data = build_data(image_cfg(tmp_path, cache_dir, val_fraction=0.25), seed=0)
    assert data.cache is not None
    assert data.cache.reused is True
    assert data.split_names == ["train", "val", "test"]
    assert len(data.train) == 9
    assert len(data.val) == 3
    tensors = data.tensors("test")
    assert tensors is not None
    assert torch.equal(tensors[0], test_images)
    assert tensors[1].tolist() == test_labels.tolist()


def test_changing_a_test_image_makes_a_new_cache(tmp_path: Path, cache_dir: Path) -> None:
    write_tree(tmp_path / "train", per_class=2)
    write_tree(tmp_path / "test", per_class=2, seed=500)
    old = _first(tmp_path, cache_dir)
    touch_later(tmp_path / "test" / "dog" / "001.png")
    new = decoded_source(image_cfg(tmp_path, cache_dir)).info
    assert new.reused is False
    assert new.key != old.key


# --------------------------------------------------------------------------- CIFAR-10


def test_cifar10_train_and_test_splits_are_cached(tmp_path: Path, cache_dir: Path) -> None:
    data_dir = write_cifar10(tmp_path / "data")
    cfg = DataConfig(
        dataset="cifar10", data_dir=data_dir, download=False, cache="disk", cache_dir=cache_dir
    )
    train_images, train_labels = cifar_tensors([1, 2, 3, 4, 5])
    test_images, test_labels = cifar_tensors([0])

    first = decoded_source(cfg)
    assert first.info.reused is False
    folder = Path(first.info.location)
    assert folder.parent == cache_dir
    assert folder.name == f"cifar10-{first.info.key[:20]}"
    assert first.info.num_images == {"train": 20, "test": 4}
    assert first.info.nbytes == 24 * 3 * 32 * 32
    assert first.classes == tuple(CIFAR_CLASSES)
    assert sorted(p.name for p in folder.iterdir()) == [
        "meta.json",
        "test_images.npy",
        "test_labels.npy",
        "train_images.npy",
        "train_labels.npy",
    ]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["dataset"] == "cifar10"
    assert meta["classes"] == CIFAR_CLASSES
    assert meta["splits"] == {"train": 20, "test": 4}

    second = decoded_source(cfg)
    assert second.info.reused is True
    assert second.info.location == first.info.location
    for source in (first, second):
        assert torch.equal(source.splits["train"].images, train_images)
        assert source.splits["train"].labels.tolist() == train_labels.tolist()
        assert torch.equal(source.splits["test"].images, test_images)
        assert source.splits["test"].labels.tolist() == test_labels.tolist()

    data = build_data(cfg.model_copy(update={"val_fraction": 0.25}), seed=0)
    assert data.cache is not None
    assert data.cache.reused is True
    assert data.cache.location == first.info.location
    assert data.test is not None
    assert len(data.test) == 4
    assert len(data.train) == 15
    assert len(data.val) == 5
    tensors = data.tensors("test")
    assert tensors is not None
    assert torch.equal(tensors[0], test_images)
    assert tensors[1].tolist() == test_labels.tolist()
    image, label = data.test[2]
    assert torch.equal(image, test_images[2])
    assert label == test_labels[2].item()


def test_cifar10_changes_and_image_size_make_new_caches(tmp_path: Path, cache_dir: Path) -> None:
    data_dir = write_cifar10(tmp_path / "data")
    cfg = DataConfig(
        dataset="cifar10", data_dir=data_dir, download=False, cache="disk", cache_dir=cache_dir
    )
    old = decoded_source(cfg).info

    resized = decoded_source(cfg.model_copy(update={"image_size": 16}))
    assert resized.info.reused is False
    assert resized.info.key != old.key
    assert resized.splits["train"].images.shape == (20, 3, 16, 16)
    assert resized.splits["test"].images.shape == (4, 3, 16, 16)
    expected = TF.resize(cifar_tensors([0])[0], [16, 16], antialias=True)
    assert torch.equal(resized.splits["test"].images, expected)

    touch_later(data_dir / "cifar-10-batches-py" / "test_batch")
    touched = decoded_source(cfg).info
    assert touched.reused is False
    assert touched.key not in (old.key, resized.info.key)
    assert len(cache_folders(cache_dir)) == 3


def test_cifar10_memory_cache_matches_disk_and_writes_nothing(
    tmp_path: Path, cache_dir: Path
) -> None:
    data_dir = write_cifar10(tmp_path / "data")
    fields = dict(dataset="cifar10", data_dir=data_dir, download=False, cache_dir=cache_dir)
    memory = decoded_source(DataConfig(cache="memory", **fields))  # type: ignore[arg-type]
    assert memory.info.location == "memory"
    assert not cache_dir.exists()
    disk = decoded_source(DataConfig(cache="disk", **fields))  # type: ignore[arg-type]
    for name in ("train", "test"):
        assert torch.equal(memory.splits[name].images, disk.splits[name].images)
        assert torch.equal(memory.splits[name].labels, disk.splits[name].labels)


def test_missing_cifar10_without_download_is_a_data_error(tmp_path: Path, cache_dir: Path) -> None:
    cfg = DataConfig(
        dataset="cifar10", data_dir=tmp_path / "none", download=False, cache_dir=cache_dir
    )
    with pytest.raises(DataError, match="download=false"):
        decoded_source(cfg)
    assert not cache_dir.exists()


# --------------------------------------------------------------------------- build_data


@pytest.mark.parametrize("source_size", [(SIZE, SIZE), (14, 11)], ids=["same-size", "resized"])
def test_build_data_gives_the_same_items_with_and_without_the_cache(
    tmp_path: Path, cache_dir: Path, source_size: tuple[int, int]
) -> None:
    write_tree(tmp_path / "train", per_class=5, size=source_size)
    write_tree(tmp_path / "test", per_class=2, size=source_size, seed=500)
    to_float = build_transform(None, SIZE)

    off = build_data(image_cfg(tmp_path, cache_dir, cache="off", val_fraction=0.2), seed=3)
    disk = build_data(image_cfg(tmp_path, cache_dir, cache="disk", val_fraction=0.2), seed=3)
    assert off.cache is None
    assert disk.cache is not None
    assert disk.cache.reused is False
    assert off.tensors("train") is None
    assert disk.tensors("train") is not None
    assert off.classes == disk.classes == CLASSES
    assert off.split_names == disk.split_names == ["train", "val", "test"]

    for name in ("train", "val", "test"):
        off_split, disk_split = off.split(name), disk.split(name)
        assert len(off_split) == len(disk_split)  # type: ignore[arg-type]
        off_items = [off_split[i] for i in range(len(off_split))]  # type: ignore[arg-type]
        disk_items = [disk_split[i] for i in range(len(disk_split))]  # type: ignore[arg-type]
        assert [label for _, label in off_items] == [label for _, label in disk_items]
        for (off_image, _), (disk_image, _) in zip(off_items, disk_items, strict=True):
            assert isinstance(disk_image, torch.Tensor)
            assert disk_image.dtype == torch.uint8
            assert torch.equal(to_float(off_image), to_float(disk_image))

    # The split depends only on the seed.
    assert off.train.indices == disk.train.indices  # type: ignore[attr-defined]
    assert off.val.indices == disk.val.indices  # type: ignore[attr-defined]
    positions = torch.tensor([0, 2])
    tensors = disk.tensors("val", positions)
    assert tensors is not None
    val_indices = torch.as_tensor(disk.val.indices)  # type: ignore[attr-defined]
    assert tensors[1].tolist() == [off.val[int(p)][1] for p in positions]
    full, _ = tree_tensors(per_class=5, size=source_size)
    if source_size == (SIZE, SIZE):
        assert torch.equal(tensors[0], full[val_indices[positions]])


# --------------------------------------------------------------------------- damage


def test_a_truncated_image_array_is_a_data_error_naming_the_folder(
    tmp_path: Path, cache_dir: Path
) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=3)
    folder = Path(decoded_source(image_cfg(data_dir, cache_dir)).info.location)
    images = folder / "train_images.npy"
    with open(images, "r+b") as handle:
        handle.truncate(images.stat().st_size // 2)  # header intact, pixels cut short

    with pytest.raises(DataError) as info:
        decoded_source(image_cfg(data_dir, cache_dir))
    message = str(info.value)
    assert str(folder) in message
    assert "damaged" in message
    assert "delete" in message


def test_a_missing_label_array_is_a_data_error(tmp_path: Path, cache_dir: Path) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=2)
    folder = Path(decoded_source(image_cfg(data_dir, cache_dir)).info.location)
    (folder / "train_labels.npy").unlink()
    with pytest.raises(DataError, match="damaged") as info:
        build_data(image_cfg(data_dir, cache_dir), seed=0)
    assert str(folder) in str(info.value)


def test_an_unreadable_meta_file_is_a_data_error(tmp_path: Path, cache_dir: Path) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=2)
    folder = Path(decoded_source(image_cfg(data_dir, cache_dir)).info.location)
    (folder / "meta.json").write_text("{not json")
    with pytest.raises(DataError) as info:
        decoded_source(image_cfg(data_dir, cache_dir))
    assert str(folder) in str(info.value)


def test_an_empty_image_array_is_a_data_error(tmp_path: Path, cache_dir: Path) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=2)
    folder = Path(decoded_source(image_cfg(data_dir, cache_dir)).info.location)
    (folder / "train_images.npy").write_bytes(b"")
    with pytest.raises(DataError, match="damaged"):
        decoded_source(image_cfg(data_dir, cache_dir))


def test_a_meta_file_without_classes_is_a_data_error(tmp_path: Path, cache_dir: Path) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=2)
    folder = Path(decoded_source(image_cfg(data_dir, cache_dir)).info.location)
    meta = json.loads((folder / "meta.json").read_text())
    del meta["classes"]
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="damaged"):
        decoded_source(image_cfg(data_dir, cache_dir))


def test_a_cache_folder_that_lost_its_meta_file_is_rebuilt(tmp_path: Path, cache_dir: Path) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=2)
    folder = Path(decoded_source(image_cfg(data_dir, cache_dir)).info.location)
    (folder / "meta.json").unlink()
    info = decoded_source(image_cfg(data_dir, cache_dir)).info
    assert info.reused is False
    assert (folder / "meta.json").is_file()


def test_symlinked_class_folders_can_be_cached(tmp_path: Path, cache_dir: Path) -> None:
    real = write_tree(tmp_path / "real", per_class=2)
    linked = tmp_path / "linked"
    linked.mkdir()
    for name in CLASSES:
        (linked / name).symlink_to(real / name, target_is_directory=True)
    assert len(build_data(image_cfg(linked, cache_dir, cache="off"), seed=0).classes) == 3
    info = decoded_source(image_cfg(linked, cache_dir)).info
    assert info.num_images == {"train": 6}


# --------------------------------------------------------------------------- cache_entries


def test_cache_entries_lists_complete_folders_only(tmp_path: Path, cache_dir: Path) -> None:
    assert list(cache_entries(cache_dir)) == []  # missing folder: nothing, no error
    data_dir = write_tree(tmp_path / "images", per_class=2)
    info = decoded_source(image_cfg(data_dir, cache_dir)).info
    (cache_dir / ".imagefolder-staging-x").mkdir()  # a write in progress
    (cache_dir / "half-written").mkdir()  # no meta.json

    entries = list(cache_entries(cache_dir))
    assert len(entries) == 1
    entry = entries[0]
    folder = Path(info.location)
    assert entry["path"] == str(folder)
    assert entry["bytes"] == sum(p.stat().st_size for p in folder.iterdir())
    assert entry["dataset"] == "imagefolder"
    assert entry["splits"] == {"train": 6}
    assert entry["key"] == info.key
    assert entry["classes"] == list(CLASSES)
    assert entry["image_size"] == SIZE
    assert entry["source"] == str(data_dir.resolve())


# --------------------------------------------------------------------------- CLI


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_cli_caches_then_reuses_then_lists(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=4)
    argv = [
        "data",
        "cache",
        "--dataset",
        "imagefolder",
        "--data-dir",
        str(data_dir),
        "--cache-dir",
        str(cache_dir),
        "--image-size",
        str(SIZE),
        "--json",
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()  # with --json the readable lines are on stderr
    created = _last_json(out)
    assert created["reused"] is False
    assert created["num_images"] == {"train": 12}
    assert created["nbytes"] == 12 * 3 * SIZE * SIZE
    assert Path(created["location"]).parent == cache_dir
    assert err.splitlines()[0] == f"created {created['location']}"
    assert "  train: 12 images" in err.splitlines()
    assert (Path(created["location"]) / "train_images.npy").is_file()

    assert main(argv) == 0
    out, err = capsys.readouterr()
    reused = _last_json(out)
    assert reused["reused"] is True
    assert reused["location"] == created["location"]
    assert reused["key"] == created["key"]
    assert reused["num_images"] == {"train": 12}
    assert err.splitlines()[0] == f"reused {created['location']}"

    assert main(["data", "cache", "--cache-dir", str(cache_dir), "--list", "--json"]) == 0
    out, err = capsys.readouterr()
    listing = _last_json(out)
    assert len(listing["entries"]) == 1
    entry = listing["entries"][0]
    assert entry["dataset"] == "imagefolder"
    assert sum(entry["splits"].values()) == 12
    assert entry["path"] == created["location"]
    assert entry["source"] == str(data_dir.resolve())
    assert "12 images" in err.splitlines()[0]

    # The cache the CLI wrote is the one training reads.
    data = build_data(image_cfg(data_dir, cache_dir, cache="auto"), seed=0)
    assert data.cache is not None
    assert data.cache.reused is True
    assert data.cache.location == created["location"]


def test_cli_list_of_an_empty_cache(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "cache", "--cache-dir", str(cache_dir), "--list", "--json"]) == 0
    out, err = capsys.readouterr()
    assert _last_json(out) == {"entries": []}
    assert err.splitlines()[0] == f"no cached datasets in {cache_dir}"
    assert not cache_dir.exists()


def test_cli_reads_the_cache_dir_from_the_environment(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=2)
    monkeypatch.setenv("VISIONOPS_CACHE_DIR", str(cache_dir))
    argv = ["data", "cache", "--dataset", "imagefolder", "--data-dir", str(data_dir), "--json"]
    assert main([*argv, "--image-size", str(SIZE)]) == 0
    created = _last_json(capsys.readouterr().out)
    assert Path(created["location"]).parent == cache_dir
    assert created["num_images"] == {"train": 6}


def test_cli_synthetic_is_a_user_error(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["data", "cache", "--dataset", "synthetic", "--cache-dir", str(cache_dir)])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error:")
    assert "synthetic" in captured.err
    assert captured.out == ""
    assert not cache_dir.exists()


def test_cli_missing_image_folder_is_a_user_error(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent"
    argv = ["data", "cache", "--dataset", "imagefolder", "--data-dir", str(missing)]
    assert main([*argv, "--cache-dir", str(cache_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert str(missing) in err
    assert not cache_dir.exists()


def test_cli_damaged_cache_is_a_user_error(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = write_tree(tmp_path / "images", per_class=2)
    argv = ["data", "cache", "--dataset", "imagefolder", "--data-dir", str(data_dir)]
    argv += ["--cache-dir", str(cache_dir), "--image-size", str(SIZE), "--json"]
    assert main(argv) == 0
    folder = Path(_last_json(capsys.readouterr().out)["location"])
    (folder / "train_labels.npy").unlink()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "damaged" in err
    assert str(folder) in err
