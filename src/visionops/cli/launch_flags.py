"""``visionops train``'s flags that start a distributed job instead of training in-process.

The same command then runs as torchrun's workers or as Ray Train's:

    visionops train --nproc 4 ...                          # torchrun, one node
    visionops train --nproc 1 --nnodes 2 --node-rank 0 --rdzv-endpoint host:29400 --rdzv-id j1
    visionops train --ray-workers 2 [--address HEAD:6379] [--use-gpu] [--max-restarts K]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from visionops.cli.output import emit_train_result
from visionops.config import TrainConfig
from visionops.errors import ConfigError


@dataclass(frozen=True)
class LaunchFlag:
    """One flag that starts a distributed job; its workers' command line drops it."""

    flag: str
    launcher: str  # the group it is listed under in --help
    help: str
    metavar: str | None = None  # None: a switch that takes no value
    type: type = str

    @property
    def takes_value(self) -> bool:
        return self.metavar is not None


_TORCHRUN = "distributed training (torchrun)"
_RAY = "distributed training (Ray Train)"
_GROUP_HELP = {
    _TORCHRUN: "Run the same training on N processes with DDP (gloo on CPU, NCCL on GPUs). "
    "batch_size stays the global batch; each process takes batch_size / N.",
    _RAY: "Run the same training as a Ray Train TorchTrainer.",
}

LAUNCH_FLAGS = (
    LaunchFlag("--nproc", _TORCHRUN, "processes on this node (one per GPU on GPUs)", "N", int),
    LaunchFlag("--nnodes", _TORCHRUN, "nodes in the job (default 1)", "M", int),
    LaunchFlag("--node-rank", _TORCHRUN, "this node's rank; node 0 hosts the rendezvous", "R", int),
    LaunchFlag("--rdzv-endpoint", _TORCHRUN, "where the nodes meet (c10d rendezvous)", "HOST:PORT"),
    LaunchFlag("--rdzv-id", _TORCHRUN, "the job's id, the same on every node", "ID"),
    LaunchFlag(
        "--max-restarts",
        _TORCHRUN,
        "restart the job from its newest checkpoint up to K times when a worker fails "
        "(also with --ray-workers)",
        "K",
        int,
    ),
    LaunchFlag("--ray-workers", _RAY, "Ray Train workers", "N", int),
    LaunchFlag("--address", _RAY, "an existing Ray cluster (default: start a local Ray)", "ADDR"),
    LaunchFlag("--use-gpu", _RAY, "one GPU per Ray Train worker"),
)

#: Each launcher flag and whether it takes a value (what worker_argv drops).
LAUNCHER_FLAGS = {spec.flag: spec.takes_value for spec in LAUNCH_FLAGS}


def add_launch_flags(train: argparse.ArgumentParser) -> None:
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in LAUNCH_FLAGS:
        if spec.launcher not in groups:
            groups[spec.launcher] = train.add_argument_group(
                spec.launcher, _GROUP_HELP[spec.launcher]
            )
        group = groups[spec.launcher]
        if spec.takes_value:
            group.add_argument(spec.flag, type=spec.type, metavar=spec.metavar, help=spec.help)
        else:
            group.add_argument(spec.flag, action="store_true", help=spec.help)


def launch_requested(
    args: argparse.Namespace, cfg: TrainConfig, resume: str | None = None
) -> int | None:
    """Start the distributed job the flags ask for and return its exit code; ``None`` when
    they ask for none (train in this process). ``resume``: the run ``--resume`` names (torchrun's
    workers read it from their own command line)."""
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
        return _ray_train(args, cfg, ray_workers, resume)
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


def _ray_train(args: argparse.Namespace, cfg: TrainConfig, workers: int, resume: str | None) -> int:
    from visionops.distributed.ray_train import run_ray_train

    result = run_ray_train(
        cfg,
        num_workers=workers,
        address=getattr(args, "address", None),
        use_gpu=getattr(args, "use_gpu", False),
        max_failures=getattr(args, "max_restarts", 0),
        resume=resume,
    )
    emit_train_result(
        result,
        cfg.tracking.register_as,
        args.json,
        args.tracking_server,
        extra_payload={"workers": workers, "ray_storage": result.storage_dir},
        extra_lines=[f"Ray Train:   {workers} workers; checkpoints in {result.storage_dir}"],
    )
    return 0
