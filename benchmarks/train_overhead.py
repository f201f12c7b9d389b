"""Tracking overhead: a bare PyTorch loop against `visionops.train` with full tracking.

Both train the same model on the same synthetic images with the same augmentation, batch
size, optimizer and schedule, and run a validation pass after each epoch. visionops also
logs per-batch metrics at every step, MLflow system metrics, checkpoints every epoch and
every 50 steps. Two throughputs are reported for each side:

- per step: the median over all steps of batch size / step wall time (data loading, forward,
  backward, optimizer and, for visionops, its per-step tracking). Medians are robust to the
  momentary slow-downs of a shared machine, which are as large as the effect measured.
- end to end: training images / wall time over all epochs, validation passes included; for
  visionops from the MLflow run's start to the write of its last epoch checkpoint, so
  checkpoint writes and run set-up count against it.

Runs alternate (bare, visionops, bare, ...) and the medians over repeats are reported.

    python benchmarks/train_overhead.py [--epochs 2] [--images 10000] [--repeats 5]

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

from visionops import names
from visionops.config import TrainConfig
from visionops.data import build_data, create_eval_loader
from visionops.data.sampling import AugmentedDataset
from visionops.data.transforms import build_transform
from visionops.models import ImageClassifier, create_model
from visionops.training import checkpoint as ckpt
from visionops.training import train


def make_config(args: argparse.Namespace, root: Path) -> TrainConfig:
    return TrainConfig(
        epochs=args.epochs,
        data={
            "dataset": "synthetic",
            "synthetic_size": args.images,
            "batch_size": args.batch_size,
            # The bare loop uses a DataLoader too: only the tracking differs.
            "loader": "classic",
        },
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


def bare_loop(cfg: TrainConfig) -> tuple[float, list[float]]:
    """The same training in plain PyTorch; returns end-to-end and per-step images/s."""
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data, cfg.seed)
    transform = build_transform(cfg.data, data.image_size)
    dataset = AugmentedDataset(data.train, transform, seed=0)
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True)
    val_loader = create_eval_loader(data, "val", cfg.data, torch.device("cpu"))
    backbone = create_model(cfg.model.name, 10, width_multiplier=cfg.model.width_multiplier)
    model = ImageClassifier(backbone, data.mean, data.std)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=0.9, nesterov=True)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, cfg.optim.lr, total_steps=cfg.epochs * len(loader), pct_start=1 / cfg.epochs
    )
    images, step_rates = 0, []
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        model.train()
        step_start = time.perf_counter()
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=cfg.optim.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            images += len(y)
            now = time.perf_counter()
            step_rates.append(len(y) / (now - step_start))
            step_start = now
        model.eval()
        with torch.no_grad():
            for x, _ in val_loader:
                model(x)
    return images / (time.perf_counter() - start), step_rates


def visionops_run(cfg: TrainConfig) -> tuple[float, list[float]]:
    """``visionops.train`` with full tracking; returns end-to-end and per-step images/s."""
    result = train(cfg)
    client = MlflowClient()
    run = client.get_run(result.run_id)
    last_checkpoint = ckpt.list_checkpoints(result.run_dir)[0]
    elapsed = last_checkpoint.stat().st_mtime - run.info.start_time / 1000
    steps = ckpt.load_checkpoint(last_checkpoint)["progress"]["step"]
    # With log_every_n_steps=1 each point covers exactly one step.
    step_rates = [m.value for m in client.get_metric_history(result.run_id, names.IMAGES_PER_SEC)]
    return steps * cfg.data.batch_size / elapsed, step_rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    end_to_end: dict[str, list[float]] = {"bare": [], "visionops": []}
    per_step: dict[str, list[float]] = {"bare": [], "visionops": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            cfg = make_config(args, Path(tmp) / f"r{repeat}")
            for side, run in (("bare", bare_loop), ("visionops", visionops_run)):
                total, steps = run(cfg)
                end_to_end[side].append(total)
                per_step[side].append(statistics.median(steps))

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 1)

    step_ratio = statistics.median(per_step["visionops"]) / statistics.median(per_step["bare"])
    total_ratio = statistics.median(end_to_end["visionops"]) / statistics.median(end_to_end["bare"])
    report = {
        "benchmark": "train_overhead",
        "model": f"resnet9 x{args.width}",
        "images": args.images,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "bare_images_per_sec": median(per_step["bare"]),
        "visionops_images_per_sec": median(per_step["visionops"]),
        "ratio": round(step_ratio, 4),
        "end_to_end": {
            "bare_images_per_sec": median(end_to_end["bare"]),
            "visionops_images_per_sec": median(end_to_end["visionops"]),
            "ratio": round(total_ratio, 4),
        },
        "runs": {
            "per_step": {k: [round(v, 1) for v in vs] for k, vs in per_step.items()},
            "end_to_end": {k: [round(v, 1) for v in vs] for k, vs in end_to_end.items()},
        },
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
