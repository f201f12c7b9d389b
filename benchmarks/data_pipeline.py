"""Training-data throughput of three pipelines on the same images and augmentation.

(a) ``torchvision.datasets.ImageFolder`` + PIL decoding + ``transforms.v2`` + ``DataLoader``,
    the textbook pipeline;
(b) the decoded uint8 cache (``visionops data cache``) through the classic loader, the same
    per-image ``transforms.v2`` and ``DataLoader``;
(c) the device-resident loader: the cache on the training device, batched augmentation.

All three apply random crop (4 px reflect padding) + horizontal flip and deliver float32
batches in [0, 1] on the training device; (b) and (c) are visionops' own loaders. Each runs
over the same training split for ``--images`` images (default: one epoch).

    python benchmarks/data_pipeline.py --dataset imagefolder --data-dir data/cifar10-jpeg

Prints one JSON object; the goal is (c) >= 10x (a) on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable

import torch
from _machine import describe_machine
from torch.utils.data import DataLoader, Subset
from torchvision import datasets
from torchvision.transforms import v2

from visionops.config import DataConfig
from visionops.data import build_data, create_train_loader

AUGMENTATIONS = ("random_crop", "horizontal_flip")


def throughput(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], limit: int) -> float:
    seen, start = 0, time.perf_counter()
    for images, _ in batches:
        seen += len(images)
        if seen >= limit:
            break
    if images.is_cuda:
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="imagefolder", choices=["imagefolder", "cifar10"])
    parser.add_argument("--data-dir", default="data/cifar10-jpeg")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--num-workers", type=int, default=2, help="for (a) and (b)")
    parser.add_argument("--images", type=int, default=0, help="images per pipeline (0: an epoch)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    cfg = DataConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        augmentations=AUGMENTATIONS,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )
    cached = build_data(cfg, seed=0)  # decodes into the disk cache on first use
    samples = cached.num_train - cached.num_train % args.batch_size
    limit = args.images or samples
    results: dict[str, float] = {}

    if args.dataset == "imagefolder":
        # (a) The same training split, read from the JPEG files with PIL.
        raw = build_data(cfg.model_copy(update={"cache": "off"}), seed=0)
        assert isinstance(raw.train, Subset) and isinstance(raw.train.dataset, datasets.ImageFolder)
        raw.train.dataset.transform = v2.Compose(
            [
                v2.RandomCrop(32, padding=4, padding_mode="reflect"),
                v2.RandomHorizontalFlip(),
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
            ]
        )
        loader = DataLoader(
            raw.train,
            batch_size=args.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=args.num_workers,
            persistent_workers=args.num_workers > 0,
            pin_memory=device.type == "cuda",
        )
        results["a_imagefolder_pil_dataloader"] = throughput(
            ((x.to(device), y.to(device)) for x, y in loader), limit
        )

    for name, kind in (("b_cache_classic_loader", "classic"), ("c_device_loader", "device")):
        batches = create_train_loader(
            cached,
            cfg.model_copy(update={"loader": kind}),
            seed=0,
            samples_per_epoch=samples,
            device=device,
        )
        batches.set_epoch(0)
        results[name] = throughput(batches, limit)

    baseline = results.get("a_imagefolder_pil_dataloader")
    print(
        json.dumps(
            {
                "benchmark": "data_pipeline",
                "machine": describe_machine(),
                "device": str(device),
                "images_per_pipeline": limit,
                "batch_size": args.batch_size,
                "num_workers": args.num_workers,
                "images_per_sec": {k: round(v) for k, v in results.items()},
                "speedup_vs_a": {k: round(v / baseline, 1) for k, v in results.items()}
                if baseline
                else None,
            }
        )
    )


if __name__ == "__main__":
    main()
