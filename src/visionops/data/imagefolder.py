"""Class-per-folder image trees: ``<root>/train/<class>/*`` (+ optional ``<root>/test/``),
or a single ``<root>/<class>/*`` tree that is split into train and validation."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import ImageFolder

from visionops.errors import DataError


def load_imagefolder(data_dir: Path) -> tuple[ImageFolder, ImageFolder | None, tuple[str, ...]]:
    if not data_dir.is_dir():
        raise DataError(
            f"image folder {data_dir} does not exist; pass --data-dir pointing at a folder "
            "with one sub-folder of images per class (or train/ and test/ folders of that shape)"
        )
    train_root = data_dir / "train" if (data_dir / "train").is_dir() else data_dir
    test_root = data_dir / "test" if (data_dir / "test").is_dir() else None
    train = _open(train_root)
    test = _open(test_root) if test_root else None
    if test is not None and test.classes != train.classes:
        raise DataError(
            f"{test_root} has classes {test.classes} but {train_root} has {train.classes}; "
            "both splits need the same class folders"
        )
    return train, test, tuple(train.classes)


def _open(root: Path) -> ImageFolder:
    try:
        return ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{root} is not a class-per-folder image tree: {exc}") from exc
