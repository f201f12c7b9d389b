"""DDP scaling: `visionops.train` on 1, 2, 4, ... processes of this machine.

Weak scaling: every process trains on the same number of images per step, so the global batch
grows with the process count (``--per-process-batch`` x N) and ideal throughput is N times one
process's. Each job is started by torchrun (one process per GPU on a GPU machine, gloo on CPU)
and runs the real training loop with tracking. Reported per process count:

- throughput: the median of the run's own ``train/images_per_sec`` (global, all ranks) over
  the windows after the first epoch, which warms up;
- speedup and scaling efficiency against one process;
- all-reduce: wall time from a gradient bucket being ready to its reduced values, summed over
  a rank's steps and divided by them (a DDP communication hook times it; on GPUs it overlaps
  the backward pass, so it is an upper bound on the time it costs);
- peak memory per process: the largest resident set (CPU) or allocated CUDA memory (GPU).

On CPU each process gets ``--threads-per-process`` threads (1 by default), so N processes use N
cores and the speedup is that of adding processes, not of taking cores from intra-op threads.

    python benchmarks/ddp_scaling.py [--procs 1 2 4] [--epochs 3] [--images 4096]

Prints one JSON object, then a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from visionops import names

sys.path.insert(0, str(Path(__file__).parent))
from _machine import describe_machine


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--procs",
        type=int,
        nargs="+",
        help="process counts (default: 1, 2, 4 up to the GPUs, else the cores)",
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=4096, help="synthetic training images")
    parser.add_argument("--per-process-batch", type=int, default=64)
    parser.add_argument("--model", default="resnet9")
    parser.add_argument("--width", type=float, default=0.5, help="model width multiplier")
    parser.add_argument(
        "--threads-per-process",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of each process (1: a core per process, so N processes use N "
        "cores; 0: torchrun's default, which gives a lone process every core)",
    )
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)  # set for the torchrun workers
    return parser.parse_args()


def default_procs() -> list[int]:
    available = torch.cuda.device_count() or os.cpu_count() or 1
    counts = [n for n in (1, 2, 4, 8) if n <= available]
    return counts


def worker(args: argparse.Namespace) -> None:
    """One rank of a torchrun job: train, then write this rank's measurements."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel

    from visionops.config import TrainConfig
    from visionops.training import train, trainer

    allreduce_seconds: list[float] = []
    steps: list[int] = []
    build_job = trainer.build_job

    # No annotations: DDP checks them at run time, and this module's are strings.
    def timed_allreduce(state, bucket):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        future = default_hooks.allreduce_hook(state, bucket)

        def done(reduced: torch.futures.Future[torch.Tensor]) -> torch.Tensor:
            allreduce_seconds.append(time.perf_counter() - start)
            return reduced.value()

        return future.then(done)

    def build_job_with_timing(*a: Any, **kw: Any) -> Any:
        job = build_job(*a, **kw)
        job.optimizer.register_step_post_hook(lambda *_: steps.append(1))
        if isinstance(job.train_model, DistributedDataParallel):
            job.train_model.register_comm_hook(None, timed_allreduce)
        return job

    trainer.build_job = build_job_with_timing  # type: ignore[assignment]
    cfg = TrainConfig.model_validate(json.loads(os.environ["DDP_BENCH_CONFIG"]))
    result = train(cfg)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    rank = int(os.environ.get("RANK", "0"))
    record = {
        "rank": rank,
        "world_size": world_size,
        "run_id": result.run_id,
        "peak_memory_mib": round(peak, 1),
        "allreduce_ms_per_step": round(1000 * sum(allreduce_seconds) / max(len(steps), 1), 3),
    }
    Path(args.worker_out, f"rank-{rank}.json").write_text(json.dumps(record))


def job_config(args: argparse.Namespace, nproc: int, root: Path) -> dict[str, Any]:
    return {
        "epochs": args.epochs,
        "data": {
            "dataset": "synthetic",
            "synthetic_size": args.images,
            "batch_size": args.per_process_batch * nproc,
            "eval_batch_size": 256,
        },
        "model": {"name": args.model, "width_multiplier": args.width},
        "optim": {"lr": 0.1, "warmup_epochs": 1},
        "tracking": {
            "tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "experiment": f"ddp-scaling-{nproc}",
            "log_every_n_steps": 5,
            "system_metrics": False,
            "log_model": False,
        },
        "checkpoint": {"output_dir": str(root / f"runs-{nproc}")},
    }


def run_job(args: argparse.Namespace, nproc: int, root: Path) -> dict[str, Any]:
    out = root / f"ranks-{nproc}"
    out.mkdir()
    env = {
        **os.environ,
        "DDP_BENCH_CONFIG": json.dumps(job_config(args, nproc, root)),
        "VISIONOPS_PROGRESS": "off",
    }
    if args.threads_per_process:
        env["OMP_NUM_THREADS"] = str(args.threads_per_process)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", __file__, "--worker-out", str(out),
    ]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]
    run_id = next(r["run_id"] for r in ranks if r["rank"] == 0)
    return {
        "processes": nproc,
        "global_batch": args.per_process_batch * nproc,
        "images_per_sec": steady_throughput(root, run_id),
        "allreduce_ms_per_step": max(r["allreduce_ms_per_step"] for r in ranks),
        "peak_memory_mib_per_process": max(r["peak_memory_mib"] for r in ranks),
        "wall_sec": round(wall, 1),
    }


def steady_throughput(root: Path, run_id: str) -> float:
    """The median logged global throughput after the first epoch."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    first_epoch_end = client.get_metric_history(run_id, names.EPOCH_SECONDS)[0].timestamp
    points = client.get_metric_history(run_id, names.IMAGES_PER_SEC)
    after = [p.value for p in points if p.timestamp > first_epoch_end] or [p.value for p in points]
    return round(statistics.median(after), 1)


def main() -> None:
    args = parse_args()
    if args.worker_out:
        worker(args)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="ddp-scaling-") as folder:
        for nproc in args.procs or default_procs():
            results.append(run_job(args, nproc, Path(folder)))
    base = results[0]["images_per_sec"] / results[0]["processes"]
    for row in results:
        row["speedup"] = round(row["images_per_sec"] / results[0]["images_per_sec"], 2)
        row["efficiency"] = round(row["images_per_sec"] / (base * row["processes"]), 2)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    threads = args.threads_per_process or "torchrun's default"
    summary = {"machine": describe_machine(), "backend": backend, "threads_per_process": threads}
    print(json.dumps({**summary, "results": results}))
    print("procs  img/s    speedup  efficiency  allreduce ms/step  peak MiB/proc", file=sys.stderr)
    for r in results:
        print(
            f"{r['processes']:>5}  {r['images_per_sec']:>7.1f}  {r['speedup']:>7.2f}  "
            f"{r['efficiency']:>10.2f}  {r['allreduce_ms_per_step']:>17.2f}  "
            f"{r['peak_memory_mib_per_process']:>13.0f}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
