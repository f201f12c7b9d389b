"""Which process of a training job this is, and the few collectives the training loop needs.

A job of one process is a ``World`` of size 1, for which every collective is a no-op. torchrun
and Ray Train start N processes that each call ``train(cfg)``: torchrun describes the job in
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and leaves the process group to us; Ray Train creates
the process group itself. ``join_process_group`` handles both.

    with join_process_group(torch.device("cpu")) as world:
        world.sum_(loss_sum, correct)  # in place, over all ranks
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from visionops import env

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the rank among this machine's processes: its GPU index

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that tracks, writes checkpoints and registers models."""
        return self.rank == 0

    def sum_(self, *tensors: torch.Tensor) -> None:
        """Replace each tensor, on every rank, by its sum over the ranks."""
        if self.distributed:
            for tensor in tensors:
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)

    def broadcast_(self, *tensors: torch.Tensor) -> None:
        """Overwrite each tensor, on every rank, with rank 0's."""
        if self.distributed:
            for tensor in tensors:
                dist.broadcast(tensor, src=0)

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is true on any rank (a decision all ranks must take together)."""
        if not self.distributed:
            return flag
        value = torch.tensor(int(flag), device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def from_main(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (other ranks' ``value`` is ignored)."""
        if not self.distributed:
            return value
        box: list[Any] = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


SINGLE_PROCESS = World()


def world_from_env() -> World:
    """The job as torchrun describes it in the environment (a lone process without it)."""
    return World(
        rank=env.RANK.get(),
        size=env.WORLD_SIZE.get(),
        local_rank=env.LOCAL_RANK.get(),
    )


def current_world() -> World:
    """This process's place in the job: the live process group's, else the environment's."""
    if dist.is_available() and dist.is_initialized():
        local_rank = env.LOCAL_RANK.get()
        return World(dist.get_rank(), dist.get_world_size(), local_rank)
    return world_from_env()


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs; gloo on CPU (and for CPU tensors)."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextmanager
def join_process_group(device: torch.device) -> Iterator[World]:
    """Yield this process's ``World``, creating the process group for a torchrun job.

    A group that already exists (Ray Train's, a test's) is used and left alone; one created
    here is destroyed on exit, so ``train`` can be called again in the same process.
    """
    if dist.is_available() and dist.is_initialized():
        yield current_world()
        return
    world = world_from_env()
    if not world.distributed:
        yield world
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # env:// rendezvous: torchrun sets MASTER_ADDR/MASTER_PORT next to RANK and WORLD_SIZE.
    dist.init_process_group(backend_for(device), rank=world.rank, world_size=world.size)
    try:
        yield world
    finally:
        dist.destroy_process_group()
