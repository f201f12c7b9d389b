"""Tracking overhead: a bare PyTorch loop against `visionops.train` with full tracking.

Both train the same model on the same synthetic images with the same augmentation, batch
size, optimizer and schedule, and run a validation pass after each epoch. visionops also
logs per-batch metrics at every step, MLflow system metrics, checkpoints every epoch and
every 50 steps. Throughput is training images per second of wall time over the epochs:
for visionops, from the MLflow run's start to the write of its last epoch checkpoint.
Runs alternate (bare, visionops, bare, ...) and the median of each is reported.

    python benchmarks/train_overhead.py [--epochs 3] [--images 10000] [--repeats 2]

Prints one JSON object; the goal is ratio >= 0.97.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from torch.utils.data import DataLoader

from visionops.config import TrainConfig
from visionops.data import build_data, eval_loader
from visionops.data.sampling import AugmentedDataset
from visionops.data.transforms import build_transform
from visionops.models import ImageClassifier, create_model
from visionops.training import checkpoint as ckpt
from visionops.training import train


def make_config(args: argparse.Namespace, root: Path) -> TrainConfig:
    return TrainConfig(
        epochs=args.epochs,
        data={"dataset": "synthetic", "synthetic_size": args.images, "batch_size": args.batch_size},
        model={"name": "resnet9", "width_multiplier": args.width},
        optim={"lr": 0.1, "warmup_epochs": 1, "label_smoothing": 0.1},
        tracking={
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "experiment": "overhead",
            "log_every_n_steps": 1,
            "system_metrics": True,
            "log_model": False,
        },
        checkpoint={"output_dir": str(root / "outputs"), "checkpoint_every_n_steps": 50},
    )


def bare_loop(cfg: TrainConfig) -> float:
    """The same training in plain PyTorch; returns training images per second."""
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data, cfg.seed)
    transform = build_transform(data.image_size, cfg.data.augmentations)
    dataset = AugmentedDataset(data.train, transform, seed=0)
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True)
    val_loader = eval_loader(data.val, cfg.data, data.image_size, pin_memory=False)
    backbone = create_model(cfg.model.name, 10, width_multiplier=cfg.model.width_multiplier)
    model = ImageClassifier(backbone, data.mean, data.std)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, cfg.optim.lr, total_steps=cfg.epochs * len(loader), pct_start=1 / cfg.epochs
    )
    images = 0
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        model.train()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.optim.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            images += len(y)
        model.eval()
        with torch.no_grad():
            for x, _ in val_loader:
                model(x)
    return images / (time.perf_counter() - start)


def visionops_run(cfg: TrainConfig) -> float:
    result = train(cfg)
    run = MlflowClient().get_run(result.run_id)
    last_checkpoint = ckpt.list_checkpoints(result.run_dir)[0]
    elapsed = last_checkpoint.stat().st_mtime - run.info.start_time / 1000
    steps = ckpt.load_checkpoint(last_checkpoint)["progress"]["step"]
    return steps * cfg.data.batch_size / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    bare, tracked = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            cfg = make_config(args, Path(tmp) / f"r{repeat}")
            bare.append(bare_loop(cfg))
            tracked.append(visionops_run(cfg))
    bare_ips, tracked_ips = statistics.median(bare), statistics.median(tracked)
    print(
        json.dumps(
            {
                "benchmark": "train_overhead",
                "model": f"resnet9 x{args.width}",
                "images": args.images,
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "bare_images_per_sec": round(bare_ips, 1),
                "visionops_images_per_sec": round(tracked_ips, 1),
                "ratio": round(tracked_ips / bare_ips, 4),
                "runs": {"bare": [round(v, 1) for v in bare], "visionops": [round(v, 1) for v in tracked]},
                "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
            }
        )
    )


if __name__ == "__main__":
    main()
