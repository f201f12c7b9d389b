"""Decode a dataset once into uint8 tensors, in memory or in a disk cache reused across runs.

The disk cache is a folder of ``.npy`` arrays under ``cache_dir``, named by a hash of the
source (every file's path, size and modification time) and the decode settings (image size,
format version). Changing, adding or removing a source file changes the hash, so a stale cache
is never read. Arrays are memory-mapped, so data larger than RAM still loads lazily, and
concurrent runs (Ray Tune trials) share the page cache.

    visionops data cache --dataset imagefolder --data-dir data/cifar10-jpeg
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from visionops.config import DataConfig
from visionops.data.datasets import DATASETS, DatasetSpec
from visionops.data.tensor_dataset import TensorImageDataset
from visionops.errors import ConfigError, DataError

logger = logging.getLogger("visionops.data")

#: Bump when the decoded format changes: older cache folders are then ignored.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class CacheInfo:
    location: str  # the cache folder, or "memory"
    key: str
    reused: bool
    num_images: dict[str, int]
    nbytes: int
    seconds: float


@dataclass(frozen=True)
class DecodedSource:
    splits: dict[str, TensorImageDataset]  # the source's raw splits: "train" and/or "test"
    classes: tuple[str, ...]
    info: CacheInfo


def decoded_source(cfg: DataConfig) -> DecodedSource:
    """``cfg.dataset`` from ``cfg.data_dir`` as uint8 tensors, from the cache when possible.

    Raises:
        ConfigError: the dataset is unknown, or generated in memory (nothing to cache).
    """
    start = time.perf_counter()
    spec = DATASETS.get(cfg.dataset)
    if spec.files is None:
        cacheable = [s.name for s in DATASETS.entries() if s.cacheable]
        raise ConfigError(
            f"dataset {cfg.dataset!r} is generated in memory, so there is nothing to cache; "
            f"datasets read from files: {', '.join(cacheable)}"
        )
    files = spec.files(cfg)
    key = _cache_key(cfg, files)
    folder = cfg.cache_dir.expanduser() / f"{cfg.dataset}-{key[:20]}"

    if cfg.cache == "disk" or cfg.cache == "auto":
        if (folder / "meta.json").is_file():
            splits, classes = _read(folder)
            return DecodedSource(splits, classes, _info(str(folder), key, True, splits, start))
        splits, classes = _decode(cfg, spec)
        _write(folder, splits, classes, key, cfg)
        splits, classes = _read(folder)  # memory-mapped: the decoded copy can be freed
        return DecodedSource(splits, classes, _info(str(folder), key, False, splits, start))
    splits, classes = _decode(cfg, spec)
    return DecodedSource(splits, classes, _info("memory", key, False, splits, start))


def _info(
    location: str, key: str, reused: bool, splits: dict[str, TensorImageDataset], start: float
) -> CacheInfo:
    return CacheInfo(
        location=location,
        key=key,
        reused=reused,
        num_images={name: len(split) for name, split in splits.items()},
        nbytes=sum(split.images.nbytes for split in splits.values()),
        seconds=time.perf_counter() - start,
    )


def _cache_key(cfg: DataConfig, files: list[Path]) -> str:
    # Paths as the dataset names them (not resolved: class folders may be symlinks).
    root = cfg.data_dir.absolute()
    listing = []
    for path in files:
        stat = path.stat()
        listing.append((os.path.relpath(path.absolute(), root), stat.st_size, stat.st_mtime_ns))
    identity = {
        "format": CACHE_FORMAT,
        "dataset": cfg.dataset,
        "image_size": cfg.image_size,
        "files": listing,
    }
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def _decode(
    cfg: DataConfig, spec: DatasetSpec
) -> tuple[dict[str, TensorImageDataset], tuple[str, ...]]:
    source = spec.load(cfg, 0)  # a dataset read from files does not depend on the seed
    decoded = {}
    for name, split in source.splits.items():
        if isinstance(split, TensorImageDataset):  # already uint8 tensors (CIFAR-10)
            decoded[name] = _resized(split, cfg.image_size)
        else:
            decoded[name] = _decode_images(split, cfg.image_size, f"{name} from {cfg.data_dir}")
    return decoded, source.classes


def _resized(split: TensorImageDataset, image_size: int) -> TensorImageDataset:
    if split.images.shape[-2:] == (image_size, image_size):
        return split
    from torchvision.transforms.v2 import functional as TF

    images = TF.resize(split.images, [image_size, image_size], antialias=True)
    return TensorImageDataset(images, split.labels)


class _Decoded(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, folder: Any, image_size: int) -> None:
        from visionops.data.transforms import build_decode

        self.folder = folder
        self.decode = build_decode(image_size)  # resizes exactly as the classic path does

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.folder[index]
        return self.decode(image).as_subclass(torch.Tensor), label


def _decode_images(folder: Any, image_size: int, what: str) -> TensorImageDataset:
    logger.info("decoding %d images (%s)", len(folder), what)
    workers = min(4, os.cpu_count() or 1) if len(folder) > 2000 else 0
    loader = DataLoader(_Decoded(folder, image_size), batch_size=512, num_workers=workers)
    images, labels = zip(*loader, strict=True)
    return TensorImageDataset(torch.cat(images), torch.cat(labels))


def _write(
    folder: Path,
    splits: dict[str, TensorImageDataset],
    classes: tuple[str, ...],
    key: str,
    cfg: DataConfig,
) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the final folder and renamed into place: a reader never sees a partial
    # cache, and of two runs racing to write it, the second simply keeps the first's.
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for name, split in splits.items():
            np.save(staging / f"{name}_images.npy", split.images.numpy())
            np.save(staging / f"{name}_labels.npy", split.labels.numpy())
        meta = {
            "key": key,
            "format": CACHE_FORMAT,
            "classes": list(classes),
            "splits": {name: len(split) for name, split in splits.items()},
            "source": str(cfg.data_dir.resolve()),
            "dataset": cfg.dataset,
            "image_size": cfg.image_size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2))
        if folder.exists() and not (folder / "meta.json").is_file():
            shutil.rmtree(folder)  # left by a writer that died before finishing
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("cached %s in %s", cfg.dataset, folder)


def _read(folder: Path) -> tuple[dict[str, TensorImageDataset], tuple[str, ...]]:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        splits = {
            name: TensorImageDataset(
                # Copy-on-write mapping: writable for torch, lazily read, never written back.
                torch.from_numpy(np.load(folder / f"{name}_images.npy", mmap_mode="c")),
                torch.from_numpy(np.load(folder / f"{name}_labels.npy")),
            )
            for name in meta["splits"]
        }
        classes = tuple(meta["classes"])
    except (OSError, EOFError, ValueError, KeyError) as exc:
        raise DataError(
            f"the dataset cache {folder} is damaged ({exc!r}); delete it and run again"
        ) from exc
    return splits, classes


def cache_entries(cache_dir: Path) -> Iterator[dict[str, Any]]:
    """The complete cache folders under ``cache_dir`` with their metadata."""
    root = cache_dir.expanduser()
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        meta_path = folder / "meta.json"
        if folder.name.startswith(".") or not meta_path.is_file():
            continue
        size = sum(path.stat().st_size for path in folder.iterdir())
        yield {"path": str(folder), "bytes": size, **json.loads(meta_path.read_text())}
