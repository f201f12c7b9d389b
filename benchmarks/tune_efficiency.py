"""Epochs, wall time and accuracy of a sweep with ASHA against full-budget random search.

Two ``visionops tune`` sweeps (``run_sweep``) with the same recipe, search space, searcher
(random search), seed and trial count: (1) the ASHA scheduler, which stops trials that fall
behind at each rung; (2) FIFO, which runs every trial for the full ``--max-epochs``. Each trial
is visionops' ``train(cfg)`` in a Ray worker, in its own MLflow child run, on generated data.

    python benchmarks/tune_efficiency.py --recipe debug --num-samples 16 --max-epochs 8

Per sweep:

- ``epochs``: the sum over trials of the epochs each one completed (``TrialSummary.epochs``,
  the same numbers as the sweep's ``trials.csv``);
- ``wall_sec``: the ``run_sweep`` call, end to end;
- ``best_val_accuracy``: the sweep's result, the best trial that ran the full budget (the one it
  registers); ``best_val_accuracy_any`` also counts the last report of trials stopped early;
- ``train_sec``: the sum over trials of their MLflow ``train/epoch_seconds`` points, i.e. the
  time ``train`` spent in its epoch loop (training steps and the validation pass of each epoch);
- ``overhead_per_trial_sec`` = (``wall_sec`` - ``train_sec``) / trials. Trials run one at a
  time (``--cpus-per-trial`` defaults to every core), so nothing is counted twice. The overhead
  is everything else, split in two by ``trial_sec``, the sum over trials of Tune's own
  ``time_total_s`` (the time inside the trial function, up to its last report):
- ``ray_overhead_per_trial_sec`` = (``wall_sec`` - ``trial_sec``) / trials: what happens
  outside the trial functions: starting and stopping the local Ray, Tune's scheduling and
  experiment snapshots, a worker process per trial (its Python start and imports of torch,
  mlflow and visionops), and the driver's closing work (trial table, figures, registering the
  best model);
- ``trial_setup_per_trial_sec`` = (``trial_sec`` - ``train_sec``) / trials: visionops' own work
  in a trial outside its epochs: generating the synthetic set, building the model, creating the
  MLflow child run, the checkpoint written and reported to Tune after every epoch, logging the
  trained model.

Tracking goes to a temporary SQLite store and Tune's results to a temporary folder; nothing is
left behind. Prints one JSON object; the goals: ASHA uses <= 25% of FIFO's epochs for a best
accuracy within 0.5 points, and Ray's overhead is <= 1 s per trial.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import describe_machine
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.config import TrainConfig, with_fields
from visionops.recipes import get_recipe
from visionops.tuning.space import create_search_space
from visionops.tuning.sweep import SweepOptions, SweepResult, run_sweep

EXPERIMENT = "tune-efficiency"


def sweep(
    base: TrainConfig, scheduler: str, args: argparse.Namespace, storage: Path
) -> dict[str, Any]:
    options = SweepOptions(
        base=base,
        space=create_search_space(args.recipe),
        recipe=args.recipe,
        search="random",
        scheduler=scheduler,  # type: ignore[arg-type]
        num_samples=args.num_samples,
        max_epochs=args.max_epochs,
        cpus_per_trial=args.cpus_per_trial,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
        max_failures=0,
        seed=args.seed,
        storage_path=storage,
        name=f"sweep-{scheduler}",
        register_as=f"tune-efficiency-{scheduler}",
    )
    start = time.perf_counter()
    result = run_sweep(options)
    wall = time.perf_counter() - start
    return summarize(result, wall, MlflowClient(base.tracking.tracking_uri))


def summarize(result: SweepResult, wall: float, client: MlflowClient) -> dict[str, Any]:
    trials = result.trials
    train_sec = sum(
        point.value
        for trial in trials
        if trial.run_id
        for point in client.get_metric_history(trial.run_id, names.EPOCH_SECONDS)
    )
    trial_sec = sum(_tune_seconds(folder) for folder in result.sweep_dir.iterdir())
    reached = [t.val_accuracy for t in trials if t.val_accuracy is not None]
    return {
        "trials": len(trials),
        "statuses": {
            s: sum(t.status == s for t in trials) for s in sorted({t.status for t in trials})
        },
        "epochs": sum(t.epochs for t in trials),
        "epochs_per_trial": [t.epochs for t in trials],
        "wall_sec": round(wall, 1),
        "train_sec": round(train_sec, 1),
        "trial_sec": round(trial_sec, 1),
        "overhead_per_trial_sec": round((wall - train_sec) / len(trials), 2),
        "ray_overhead_per_trial_sec": round((wall - trial_sec) / len(trials), 2),
        "trial_setup_per_trial_sec": round((trial_sec - train_sec) / len(trials), 2),
        "best_val_accuracy": result.best_metric,
        "best_val_accuracy_any": max(reached, default=None),
        "best_config": result.best_config,
    }


def _tune_seconds(trial_folder: Path) -> float:
    """Tune's ``time_total_s`` at a trial's last report (0 for other folders of the sweep)."""
    results = trial_folder / "result.json"
    if not results.is_file():
        return 0.0
    last = results.read_text().strip().splitlines()[-1]
    return float(json.loads(last)["time_total_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="debug")
    parser.add_argument("--num-samples", type=int, default=16, help="trials per sweep")
    parser.add_argument("--max-epochs", type=int, default=8, help="epochs of a full trial")
    parser.add_argument(
        "--synthetic-size", type=int, default=1000, help="generated images (train + val)"
    )
    parser.add_argument("--grace-period", type=int, default=1, help="ASHA's first rung (1)")
    parser.add_argument(
        "--reduction-factor", type=int, default=4, help="ASHA keeps 1 in N per rung (4, Ray's)"
    )
    parser.add_argument(
        "--cpus-per-trial",
        type=float,
        default=float(os.cpu_count() or 1),
        help="CPUs per trial (default: all, so trials run one at a time)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the searcher's and training's")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="visionops-tune-bench-") as folder:
        root = Path(folder)
        tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        # An experiment of our own keeps logged models under the temporary folder, not ./mlruns.
        MlflowClient(tracking_uri).create_experiment(
            EXPERIMENT, artifact_location=(root / "artifacts").as_uri()
        )
        base = with_fields(
            get_recipe(args.recipe),
            dataset="synthetic",
            synthetic_size=args.synthetic_size,
            seed=args.seed,
            tracking_uri=tracking_uri,
            experiment=EXPERIMENT,
            system_metrics=False,
        )
        for scheduler in ("asha", "fifo"):
            results[scheduler] = sweep(base, scheduler, args, root / "tune-results")

    asha, fifo = results["asha"], results["fifo"]
    accuracy_gap = None
    if asha["best_val_accuracy"] is not None and fifo["best_val_accuracy"] is not None:
        accuracy_gap = round(100 * (fifo["best_val_accuracy"] - asha["best_val_accuracy"]), 2)
    epoch_ratio = asha["epochs"] / fifo["epochs"]
    worst_overhead = max(asha["ray_overhead_per_trial_sec"], fifo["ray_overhead_per_trial_sec"])
    print(
        json.dumps(
            {
                "benchmark": "tune_efficiency",
                "machine": describe_machine(),
                "recipe": args.recipe,
                "synthetic_size": args.synthetic_size,
                "search": "random",
                "num_samples": args.num_samples,
                "max_epochs": args.max_epochs,
                "grace_period": args.grace_period,
                "reduction_factor": args.reduction_factor,
                "cpus_per_trial": args.cpus_per_trial,
                "seed": args.seed,
                "asha": asha,
                "fifo": fifo,
                "asha_epochs_over_fifo": round(epoch_ratio, 3),
                "accuracy_gap_points": accuracy_gap,  # FIFO's best minus ASHA's, in points
                "goals": {
                    "epochs_ratio_le_0.25": epoch_ratio <= 0.25,
                    "accuracy_gap_le_0.5_points": accuracy_gap is not None and accuracy_gap <= 0.5,
                    "ray_overhead_le_1s_per_trial": worst_overhead <= 1.0,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
