"""visionops against PyTorch Lightning: the same training, tracked by each.

Both sides train the same model (visionops' ``create_model``, the airbench net of
``cifar10-fast`` by default) on the same split of the same images, with the same per-image
augmentation (random crop, horizontal flip), optimizer (``cifar10-fast``'s Nesterov SGD with
its parameter groups) and one-cycle schedule, and validate after every epoch:

- visionops: ``visionops.train`` with full tracking: a metric point every step, MLflow system
  metrics, a checkpoint every epoch and every 50 steps;
- Lightning 2.x (benchmarks/lightning_side.py, in .venv-lightning): a LightningModule with
  ``MLFlowLogger`` (``log_every_n_steps=1``) and ``ModelCheckpoint`` every epoch.

Reported for each: images/s per step (median over steps: data loading, forward, backward,
optimizer, per-step tracking), images/s end to end (training images / wall time of the whole
training call: data, model, epochs, validation passes and checkpoints; Lightning's interpreter
start and imports excluded), and the final validation accuracy. Runs alternate (Lightning,
visionops, Lightning, ...); medians over repeats are reported. ``--loader auto`` lets visionops
use its batched loader instead of a DataLoader like Lightning's.

    make bench-lightning            # creates .venv-lightning on first use
    .venv/bin/python benchmarks/vs_lightning.py --data-dir data/cifar10-jpeg [--epochs 2]
    .venv/bin/python benchmarks/vs_lightning.py --synthetic --images 512 --repeats 1 --epochs 1

Prints one JSON object; the goal is end_to_end.ratio >= 1.0 (visionops / Lightning).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from _machine import describe_machine
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.config import TrainConfig, config_to_dict
from visionops.data import build_data
from visionops.recipes import get_recipe
from visionops.training import train

SIDES = ("lightning", "visionops")
LIGHTNING_SIDE = Path(__file__).with_name("lightning_side.py")


def make_config(args: argparse.Namespace, root: Path) -> TrainConfig:
    """The training both sides run: ``cifar10-fast``'s model and optimizer, with per-image
    augmentations (its alternating flip exists only in visionops' batched loader) and no
    test-time augmentation, which a Lightning validation step would not have."""
    recipe = get_recipe("cifar10-fast")
    if args.synthetic:
        data = {"dataset": "synthetic", "synthetic_size": args.images}
    else:
        data = {"dataset": "imagefolder", "data_dir": args.data_dir}
    return TrainConfig(
        epochs=args.epochs,
        device="cpu",
        precision=args.precision,
        channels_last="off",
        data={
            **data,
            "batch_size": args.batch_size,
            "augmentations": ("random_crop", "horizontal_flip"),
            "crop_padding": recipe.data.crop_padding,
            "tta": "none",
            "loader": args.loader,
            "num_workers": args.num_workers,
        },
        model={"name": args.model, "width_multiplier": args.width},
        # The recipe's warm-up is a share of the run (warmup_fraction): it scales with epochs.
        optim=recipe.optim,
        tracking={
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "experiment": "vs-lightning",
            "log_every_n_steps": 1,
            "system_metrics": True,
            "log_model": False,
        },
        checkpoint={"output_dir": str(root / "outputs"), "checkpoint_every_n_steps": 50},
    )


def visionops_run(cfg: TrainConfig, root: Path) -> dict[str, Any]:
    start = time.perf_counter()
    result = train(cfg)
    elapsed = time.perf_counter() - start
    client = MlflowClient(cfg.tracking.tracking_uri)
    # With log_every_n_steps=1 each point covers exactly one step.
    rates = [m.value for m in client.get_metric_history(result.run_id, names.IMAGES_PER_SEC)]
    return {
        "end_to_end_images_per_sec": len(rates) * cfg.data.batch_size / elapsed,
        "per_step_images_per_sec": rates,
        "val_accuracy": result.metrics[names.VAL_ACCURACY],
    }


def lightning_run(python: str) -> Callable[[TrainConfig, Path], dict[str, Any]]:
    def run(cfg: TrainConfig, root: Path) -> dict[str, Any]:
        root.mkdir(parents=True, exist_ok=True)
        config_path = root / "lightning-config.json"
        config_path.write_text(json.dumps({"config": config_to_dict(cfg)}))
        done = subprocess.run(
            [python, str(LIGHTNING_SIDE), str(config_path), str(root / "lightning")],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        return parse_side_output(done.stdout)

    return run


def parse_side_output(stdout: str) -> dict[str, Any]:
    """The JSON object on the last non-empty line of the Lightning side's output."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError("the Lightning side printed nothing; see its error output above")
    return json.loads(lines[-1])


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 1)


def summarise(
    repeats: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, Any]:
    """Medians over repeats of each side's figures, and visionops / Lightning ratios.

    Args:
        repeats: for each side, one result per repeat, as ``visionops_run`` returns it.
    """
    per_step = {
        side: [statistics.median(r["per_step_images_per_sec"]) for r in runs]
        for side, runs in repeats.items()
    }
    end_to_end = {
        side: [float(r["end_to_end_images_per_sec"]) for r in runs]
        for side, runs in repeats.items()
    }
    accuracy = {side: [float(r["val_accuracy"]) for r in runs] for side, runs in repeats.items()}

    def ratio(figures: Mapping[str, Sequence[float]]) -> float:
        return round(
            statistics.median(figures["visionops"]) / statistics.median(figures["lightning"]), 4
        )

    return {
        "per_step": {f"{side}_images_per_sec": median(per_step[side]) for side in SIDES}
        | {"ratio": ratio(per_step)},
        "end_to_end": {f"{side}_images_per_sec": median(end_to_end[side]) for side in SIDES}
        | {"ratio": ratio(end_to_end)},
        "val_accuracy": {side: round(statistics.median(accuracy[side]), 4) for side in SIDES},
        "runs": {
            "per_step": {k: [round(v, 1) for v in vs] for k, vs in per_step.items()},
            "end_to_end": {k: [round(v, 1) for v in vs] for k, vs in end_to_end.items()},
            "val_accuracy": {k: [round(v, 4) for v in vs] for k, vs in accuracy.items()},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="data/cifar10-jpeg", help="class-per-folder images")
    parser.add_argument("--synthetic", action="store_true", help="generated images instead")
    parser.add_argument("--images", type=int, default=2000, help="--synthetic: how many")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--model", default="airbench")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--loader", choices=("classic", "auto"), default="classic")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lightning-python", default=".venv-lightning/bin/python")
    args = parser.parse_args()

    if not Path(args.lightning_python).exists():
        parser.error(f"{args.lightning_python} not found; make bench-lightning creates it")
    sides = {"lightning": lightning_run(args.lightning_python), "visionops": visionops_run}
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    versions: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vs-lightning-") as tmp:
        # Decodes an image folder into the shared disk cache now, so that neither side's first
        # run pays for it.
        warm = make_config(args, Path(tmp))
        build_data(warm.data, warm.seed)
        for repeat in range(args.repeats):
            cfg = make_config(args, Path(tmp) / f"r{repeat}")
            for side in SIDES:
                result = sides[side](cfg, Path(tmp) / f"r{repeat}")
                if side == "lightning":
                    versions = {
                        "lightning": result["lightning"],
                        "lightning_torch": result["torch"],
                    }
                results[side].append(result)

    cfg = make_config(args, Path("."))
    report = {
        "benchmark": "vs_lightning",
        "dataset": "synthetic" if args.synthetic else f"imagefolder:{args.data_dir}",
        "model": f"{args.model} x{args.width}",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "visionops_loader": args.loader,
        "augmentations": list(cfg.data.augmentations),
        "repeats": args.repeats,
        **summarise(results),
        "machine": describe_machine(),
        **versions,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
