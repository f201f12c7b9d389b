"""Class-per-folder image trees. Three layouts:

- ``<root>/train/<class>/*`` (+ optional ``<root>/test/<class>/*``);
- a single ``<root>/<class>/*`` tree, split into train and validation;
- ``<root>/test/<class>/*`` alone: a test split and no training images, for evaluating a
  model on a test set of its own.
"""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import ImageFolder

from visionops.errors import DataError


def load_imagefolder(
    data_dir: Path,
) -> tuple[ImageFolder | None, ImageFolder | None, tuple[str, ...]]:
    """The train and test trees under ``data_dir`` (either may be None, not both) and the
    class names."""
    if not data_dir.is_dir():
        raise DataError(
            f"image folder {data_dir} does not exist; pass --data-dir pointing at a folder "
            "with one sub-folder of images per class (or train/ and test/ folders of that shape)"
        )
    train_root, test_root = data_dir / "train", data_dir / "test"
    test = _open(test_root) if test_root.is_dir() else None
    if train_root.is_dir():
        train: ImageFolder | None = _open(train_root)
    elif test is None:
        train_root = data_dir
        train = _open(train_root)
    else:
        others = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and p != test_root)
        if others:
            raise DataError(
                f"{data_dir} has test/ next to other folders ({', '.join(others)}) but no "
                "train/; put the training class folders under train/"
            )
        train = None  # a test set on its own: evaluation only
    if train is not None and test is not None and test.classes != train.classes:
        raise DataError(
            f"{test_root} has classes {test.classes} but {train_root} has {train.classes}; "
            "both splits need the same class folders"
        )
    tree = train if train is not None else test
    assert tree is not None  # without test/, data_dir itself was opened as the train tree
    return train, test, tuple(tree.classes)


def imagefolder_files(data_dir: Path) -> list[Path]:
    """Every image file of the trees under ``data_dir``."""
    train, test, _ = load_imagefolder(data_dir)
    return [Path(path) for split in (train, test) if split for path, _ in split.samples]


def _open(root: Path) -> ImageFolder:
    try:
        return ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{root} is not a class-per-folder image tree: {exc}") from exc
