"""``visionops train``'s flags that start a distributed job instead of training in-process.

The same command then runs as torchrun's workers or as Ray Train's:

    visionops train --nproc 4 ...                          # torchrun, one node
    visionops train --nproc 1 --nnodes 2 --node-rank 0 --rdzv-endpoint host:29400 --rdzv-id j1
    visionops train --ray-workers 2 [--address HEAD:6379] [--use-gpu] [--max-restarts K]
"""

from __future__ import annotations

import argparse

from visionops.cli.output import emit_train_result
from visionops.config import TrainConfig
from visionops.errors import ConfigError

# Each launcher flag and whether it takes a value: the workers' command line drops them.
LAUNCHER_FLAGS = {
    "--nproc": True,
    "--nnodes": True,
    "--node-rank": True,
    "--rdzv-endpoint": True,
    "--rdzv-id": True,
    "--max-restarts": True,
    "--ray-workers": True,
    "--address": True,
    "--use-gpu": False,
}


def add_launch_flags(train: argparse.ArgumentParser) -> None:
    torchrun = train.add_argument_group(
        "distributed training (torchrun)",
        "Run the same training on N processes with DDP (gloo on CPU, NCCL on GPUs). "
        "batch_size stays the global batch; each process takes batch_size / N.",
    )
    torchrun.add_argument(
        "--nproc", type=int, metavar="N", help="processes on this node (one per GPU on GPUs)"
    )
    torchrun.add_argument("--nnodes", type=int, metavar="M", help="nodes in the job (default 1)")
    torchrun.add_argument(
        "--node-rank", type=int, metavar="R", help="this node's rank; node 0 hosts the rendezvous"
    )
    torchrun.add_argument(
        "--rdzv-endpoint", metavar="HOST:PORT", help="where the nodes meet (c10d rendezvous)"
    )
    torchrun.add_argument("--rdzv-id", metavar="ID", help="the job's id, the same on every node")
    torchrun.add_argument(
        "--max-restarts",
        type=int,
        metavar="K",
        help="restart the job from its newest checkpoint up to K times when a worker fails "
        "(also with --ray-workers)",
    )
    ray = train.add_argument_group(
        "distributed training (Ray Train)", "Run the same training as a Ray Train TorchTrainer."
    )
    ray.add_argument("--ray-workers", type=int, metavar="N", help="Ray Train workers")
    ray.add_argument(
        "--address", metavar="ADDR", help="an existing Ray cluster (default: start a local Ray)"
    )
    ray.add_argument("--use-gpu", action="store_true", help="one GPU per Ray Train worker")


def launch_requested(args: argparse.Namespace, cfg: TrainConfig) -> int | None:
    """Start the distributed job the flags ask for and return its exit code; ``None`` when
    they ask for none (train in this process)."""
    nproc, ray_workers = getattr(args, "nproc", None), getattr(args, "ray_workers", None)
    if nproc is not None and ray_workers is not None:
        raise ConfigError("--nproc (torchrun) and --ray-workers (Ray Train) exclude each other")
    torchrun_only = ("nnodes", "node_rank", "rdzv_endpoint", "rdzv_id")
    if nproc is None and any(hasattr(args, name) for name in torchrun_only):
        raise ConfigError("--nnodes, --node-rank, --rdzv-endpoint, --rdzv-id need --nproc N")
    if nproc is None and ray_workers is None and hasattr(args, "max_restarts"):
        raise ConfigError("--max-restarts needs --nproc N or --ray-workers N")
    if ray_workers is None and (hasattr(args, "address") or getattr(args, "use_gpu", False)):
        raise ConfigError("--address and --use-gpu need --ray-workers N")
    from visionops.training.job import check_batch_divides

    if nproc is not None:
        # Checked by every worker too; here it fails before any starts.
        check_batch_divides(cfg, nproc * getattr(args, "nnodes", 1))
        return _torchrun(args, nproc)
    if ray_workers is not None:
        check_batch_divides(cfg, ray_workers)
        return _ray_train(args, cfg, ray_workers)
    return None


def _torchrun(args: argparse.Namespace, nproc: int) -> int:
    from visionops.distributed.launch import TorchrunOptions, launch_torchrun, worker_argv

    options = TorchrunOptions(
        nproc=nproc,
        nnodes=getattr(args, "nnodes", 1),
        node_rank=getattr(args, "node_rank", 0),
        rdzv_endpoint=getattr(args, "rdzv_endpoint", None),
        rdzv_id=getattr(args, "rdzv_id", None),
        max_restarts=getattr(args, "max_restarts", 0),
    )
    argv: list[str] = args.argv
    launch_torchrun(options, worker_argv(argv[argv.index("train") + 1 :], LAUNCHER_FLAGS))
    return 0  # rank 0 printed the result


def _ray_train(args: argparse.Namespace, cfg: TrainConfig, workers: int) -> int:
    from visionops.distributed.ray_train import run_ray_train

    result = run_ray_train(
        cfg,
        num_workers=workers,
        address=getattr(args, "address", None),
        use_gpu=getattr(args, "use_gpu", False),
        max_failures=getattr(args, "max_restarts", 0),
    )
    emit_train_result(
        result,
        cfg.tracking.register_as,
        args.json,
        extra_payload={"workers": workers, "ray_storage": result.storage_dir},
        extra_lines=[f"Ray Train:   {workers} workers; checkpoints in {result.storage_dir}"],
    )
    return 0
