"""CIFAR-10 in torchvision's on-disk format (``<data_dir>/cifar-10-batches-py``)."""

from __future__ import annotations

import pickle
import urllib.error
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10

from visionops.data.tensor_dataset import TensorImageDataset
from visionops.errors import DataError


class _CIFAR10Files(CIFAR10):
    # torchvision checks every batch file against the md5 of the official release; we accept
    # any file set in the same layout (re-encodings, subsets, test fixtures) and let unpickling
    # report real corruption.
    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        path = Path(self.root) / self.base_folder / self.meta["filename"]
        if not path.is_file():
            raise RuntimeError(f"{path} is missing")
        with path.open("rb") as handle:
            self.classes = pickle.load(handle, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


def _load_split(root: Path, train: bool) -> _CIFAR10Files:
    return _CIFAR10Files(root=str(root), train=train, download=False)


def cifar10_files(data_dir: Path, download: bool) -> list[Path]:
    """The batch files of CIFAR-10 under ``data_dir``, downloading first if allowed and missing."""
    folder = data_dir / CIFAR10.base_folder
    if not folder.is_dir():
        if not download:
            raise DataError(_missing_message(data_dir, "downloads are disabled (download=false)"))
        try:
            CIFAR10(root=str(data_dir), train=True, download=True)
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            raise DataError(_missing_message(data_dir, f"the download failed ({exc})")) from exc
    names = [name for name, _ in CIFAR10.train_list + CIFAR10.test_list]
    return [
        folder / name for name in [*names, CIFAR10.meta["filename"]] if (folder / name).exists()
    ]


def load_cifar10(
    data_dir: Path, download: bool
) -> tuple[TensorImageDataset, TensorImageDataset, tuple[str, ...]]:
    """Train and test splits as uint8 tensors, downloading first if allowed and missing."""
    cifar10_files(data_dir, download)
    folder = data_dir / CIFAR10.base_folder
    try:
        train, test = _load_split(data_dir, train=True), _load_split(data_dir, train=False)
    except RuntimeError as exc:
        raise DataError(f"CIFAR-10 under {folder} is incomplete: {exc}") from exc
    return _to_tensors(train), _to_tensors(test), tuple(train.classes)


def _to_tensors(split: CIFAR10) -> TensorImageDataset:
    images = torch.from_numpy(np.ascontiguousarray(split.data.transpose(0, 3, 1, 2)))
    return TensorImageDataset(images, torch.tensor(split.targets))


def _missing_message(data_dir: Path, why: str) -> str:
    return (
        f"CIFAR-10 was not found in {data_dir / CIFAR10.base_folder} and {why}; pass --data-dir "
        "pointing at a folder that holds cifar-10-batches-py, or use --dataset imagefolder "
        "with a class-per-folder image tree"
    )
