"""``visionops train --nproc N``: the same command on N processes, through torchrun's elastic
launcher, which is what ``torchrun -m visionops train ...`` runs.

    launch_torchrun(TorchrunOptions(nproc=2, max_restarts=1), ["--recipe", "debug"])

One node: the launcher finds a free port itself (``--standalone``). Several nodes: every node
runs the same command with ``--nnodes M --rdzv-endpoint HOST:PORT`` (c10d rendezvous); the node
with ``--node-rank 0`` hosts the rendezvous store on HOST:PORT.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from visionops import env
from visionops.errors import ConfigError, TrainingInterrupted, VisionOpsError

logger = logging.getLogger(__name__)


class DistributedJobFailed(VisionOpsError):
    """A worker failed and the job had no restarts left."""


@dataclass(frozen=True)
class TorchrunOptions:
    nproc: int  # processes on this node: one per GPU on GPU machines
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None  # HOST:PORT of the rendezvous; needed with nnodes > 1
    rdzv_id: str | None = None  # the job's id, the same on every node (default: generated)
    max_restarts: int = 0  # restarts of the whole job after a worker fails

    def check(self) -> None:
        if self.nproc < 1 or self.nnodes < 1:
            raise ConfigError(f"--nproc ({self.nproc}) and --nnodes ({self.nnodes}) must be >= 1")
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(f"--node-rank {self.node_rank} is outside 0..{self.nnodes - 1}")
        if self.max_restarts < 0:
            raise ConfigError(f"--max-restarts must be >= 0, not {self.max_restarts}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ConfigError(
                f"--nnodes {self.nnodes} needs --rdzv-endpoint HOST:PORT, the address every "
                "node reaches the node with --node-rank 0 at"
            )
        if self.nnodes > 1 and not self.rdzv_id:
            raise ConfigError(
                "--nnodes > 1 needs --rdzv-id, the same job id on every node, so that the "
                "nodes of one job find each other and not those of another"
            )


def torchrun_arguments(options: TorchrunOptions, worker_argv: list[str]) -> list[str]:
    """torchrun's command line (after ``torchrun``) for ``visionops train <worker_argv>``."""
    options.check()
    argv = [f"--nproc-per-node={options.nproc}", f"--max-restarts={options.max_restarts}"]
    if options.nnodes == 1 and not options.rdzv_endpoint:
        # A fresh id per launch: restarted workers find their job's run by it.
        argv += ["--standalone", f"--rdzv-id={options.rdzv_id or uuid.uuid4().hex}"]
    else:
        is_host = "1" if options.node_rank == 0 else "0"
        argv += [
            f"--nnodes={options.nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={options.rdzv_endpoint}",
            f"--rdzv-id={options.rdzv_id or uuid.uuid4().hex}",
            # c10d numbers nodes as they arrive; the node rank says who hosts the store.
            f"--rdzv-conf=is_host={is_host}",
        ]
    return [*argv, "--module", "visionops", "train", *worker_argv]


def launch_torchrun(options: TorchrunOptions, worker_argv: list[str]) -> None:
    """Run ``visionops train <worker_argv>`` on ``options.nproc`` processes of this node.

    Raises:
        DistributedJobFailed: a worker failed ``max_restarts + 1`` times.
        TrainingInterrupted: SIGINT/SIGTERM stopped the job (after its checkpoint).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if options.max_restarts > 0:
        # The store the launcher shares with its workers outlives a restart, so restarted
        # workers read their predecessors' gloo/NCCL addresses from it and fail to connect
        # (pytorch/pytorch#135712, still so in torch 2.14); unshared, every attempt gets a
        # fresh store, which its own rank 0 hosts.
        env.SHARE_RDZV_STORE_OFF.set_default("1")
    args = get_args_parser().parse_args(torchrun_arguments(options, worker_argv))
    try:
        run(args)
    except SignalException as stop:
        # torchrun passed the signal on; the workers checkpointed and rank 0 said where.
        raise TrainingInterrupted(
            f"distributed training stopped by {stop.sigval.name}; rank 0's message above "
            "names the checkpoint and the command that resumes it",
            checkpoint="",
            run_id=None,
        ) from stop
    except ChildFailedError as failure:
        rank, first = failure.get_first_failure()
        restarts = options.max_restarts
        raise DistributedJobFailed(
            f"distributed training failed: worker rank {rank} (pid {first.pid}) exited with "
            f"code {first.exitcode} and the job had used its {restarts} restart"
            f"{'' if restarts == 1 else 's'} (--max-restarts {restarts}); its output is above"
        ) from failure


def worker_argv(argv: list[str], launcher_flags: dict[str, bool]) -> list[str]:
    """``argv`` (the arguments after ``train``) without the launcher's own flags.

    ``launcher_flags`` maps each flag to whether it takes a value.
    """
    kept: list[str] = []
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
            continue
        name = arg.split("=", 1)[0]
        if name in launcher_flags:
            skip_value = launcher_flags[name] and "=" not in arg
            continue
        kept.append(arg)
    return kept
