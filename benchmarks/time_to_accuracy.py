"""Wall time and epochs to 90% and 94% validation accuracy for a recipe, tracking on.

Runs ``visionops.train`` once with the recipe (MLflow tracking, per-batch metrics and
checkpoints as in any run) and reads the per-epoch validation accuracy and its timestamps
back from MLflow. Times count from the call to ``train`` (model build, data on the device,
every epoch's training and validation); the one-off decode into the disk cache is reported
separately.

    python benchmarks/time_to_accuracy.py --recipe cifar10-fast \\
        --dataset imagefolder --data-dir data/cifar10-jpeg

Prints one JSON object. Goals: cifar10-fast reaches 90% within 30 minutes on 2 CPU cores,
and 94% within 3.5 s on one H100-class GPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _machine import describe_machine
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.config import overrides_from_mapping, resolve_config
from visionops.data.cache import decoded_source
from visionops.data.datasets import DATASETS
from visionops.recipes import get_recipe
from visionops.training import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="cifar10-fast")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--targets", default="0.90,0.94", help="accuracies to time")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--compile", choices=("auto", "on", "off"), default="auto", help="torch.compile the model"
    )
    parser.add_argument("--tracking-uri", help="default: a fresh SQLite store in a temp folder")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="time-to-accuracy-"))
    values = {
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "device": args.device,
        "compile": args.compile,
        "tracking_uri": args.tracking_uri or f"sqlite:///{root / 'mlflow.db'}",
        "experiment": "time-to-accuracy",
        "output_dir": str(root / "outputs"),
        **({"epochs": args.epochs} if args.epochs else {}),
    }
    cfg = resolve_config(get_recipe(args.recipe), overrides_from_mapping(values, "benchmark"))
    if cfg.data.val_fraction == 0:
        # Before any training: the figures are epochs and seconds to a val/accuracy.
        parser.error(
            f"recipe {args.recipe!r} has val_fraction 0 (no validation split), and this "
            f"benchmark times {names.VAL_ACCURACY}; use a recipe with val_fraction > 0"
        )
    cacheable = DATASETS.get(cfg.data.dataset).cacheable
    cache = decoded_source(cfg.data).info if cacheable else None

    start = time.time()
    result = train(cfg)
    total = time.time() - start

    history = MlflowClient(cfg.tracking.tracking_uri).get_metric_history(
        result.run_id, names.VAL_ACCURACY
    )
    epochs = [
        {
            "epoch": m.step,
            names.VAL_ACCURACY: m.value,
            "elapsed_s": round(m.timestamp / 1000 - start, 2),
        }
        for m in sorted(history, key=lambda m: m.step)
    ]
    reached = first_reached(epochs, args.targets)
    print(
        json.dumps(
            {
                "benchmark": "time_to_accuracy",
                "recipe": args.recipe,
                "dataset": f"{cfg.data.dataset}:{cfg.data.data_dir}",
                "val_images": round(cfg.data.val_fraction * cache.num_images["train"])
                if cache
                else None,
                "machine": describe_machine(),
                "runtime": {
                    "precision": cfg.precision,
                    "channels_last": cfg.channels_last,
                    "compile": cfg.compile,
                },
                "cache": {"reused": cache.reused, "seconds": round(cache.seconds, 1)}
                if cache
                else None,
                "reached": reached,
                "final_val_accuracy": result.metrics.get(names.VAL_ACCURACY),
                "total_seconds": round(total, 1),
                "epochs": epochs,
                "run_id": result.run_id,
            }
        )
    )


def first_reached(
    epochs: list[dict[str, float]], targets: str
) -> dict[str, dict[str, float] | None]:
    """For each of the comma-separated ``targets``, keyed as written, the first epoch whose
    val/accuracy reached it (its number and seconds), or None."""
    reached: dict[str, dict[str, float] | None] = {}
    for target in (t.strip() for t in targets.split(",")):
        first = next((e for e in epochs if e[names.VAL_ACCURACY] >= float(target)), None)
        reached[target] = (
            {"epochs": first["epoch"], "seconds": first["elapsed_s"]} if first else None
        )
    return reached


if __name__ == "__main__":
    main()
