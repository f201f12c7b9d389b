"""Everything one training run works with, assembled from the config before a run starts."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler

from visionops import names
from visionops.config import TrainConfig, check_field, config_to_dict, redacted
from visionops.data import (
    Batch,
    DataBundle,
    TrainBatches,
    build_data,
    create_eval_loader,
    create_train_loader,
)
from visionops.training.checks import check_names
from visionops.training.distill import LossFn, create_loss, load_teacher
from visionops.training.evaluate import EvalResult
from visionops.training.model_source import build_classifier
from visionops.training.optim import create_optimizer, create_scheduler
from visionops.training.runtime import Runtime, capture_rng_state, restore_rng_state
from visionops.training.world import SINGLE_PROCESS, World


@dataclass
class TrainState:
    """Where training stands (epoch, step, this epoch's running sums); saved in every
    checkpoint and restored by a resume."""

    epoch: int = 0  # the epoch in progress (0-based)
    micro_batches_done: int = 0  # micro-batches of that epoch already trained on
    step: int = 0  # optimizer steps over the whole run
    # This epoch's running sums stay on the device: reading them every step would force a
    # host-device sync per step on GPUs.
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    correct: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.int64))
    seen: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # finished epochs' metrics

    def record_batch(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss_sum += loss.detach() * len(labels)
        # CutMix/MixUp labels are class probabilities: the dominant class counts as the label.
        hard_labels = labels if labels.ndim == 1 else labels.argmax(dim=1)
        self.correct += (logits.argmax(dim=1) == hard_labels).sum()
        self.seen += len(labels)
        self.micro_batches_done += 1

    def global_counts(self, world: World) -> tuple[float, float, float]:
        """This epoch's (loss sum, correct, seen) over every rank of the job."""
        device = self.loss_sum.device
        sums = torch.stack(
            [
                self.loss_sum,
                self.correct.to(torch.float64),
                torch.tensor(float(self.seen), dtype=torch.float64, device=device),
            ]
        )
        world.sum_(sums)
        loss_sum, correct, seen = sums.tolist()
        return loss_sum, correct, seen

    def finish_epoch(
        self, val: EvalResult | None, seconds: float, world: World = SINGLE_PROCESS
    ) -> dict[str, float]:
        """Close the epoch in progress; returns its metrics (over all ranks) and starts the
        next one. ``val`` is the epoch's validation, None in a run without a val split
        (``val_fraction=0``), whose epochs have training metrics only."""
        loss_sum, correct, seen = self.global_counts(world)
        metrics = {names.TRAIN_LOSS: loss_sum / seen, names.TRAIN_ACCURACY: correct / seen}
        if val is not None:
            metrics |= {names.VAL_LOSS: val.loss, names.VAL_ACCURACY: val.accuracy}
        metrics[names.EPOCH_SECONDS] = seconds
        self.epoch += 1
        self.history.append({names.EPOCH_KEY: self.epoch, **metrics})
        self.micro_batches_done, self.seen = 0, 0
        self.loss_sum, self.correct = (
            torch.zeros_like(self.loss_sum),
            torch.zeros_like(self.correct),
        )
        return metrics


@dataclass
class TrainingJob:
    cfg: TrainConfig
    runtime: Runtime
    world: World
    data: DataBundle
    # What is evaluated, checkpointed and logged; compiled in place with runtime.compile (its
    # copies, such as the one log_model exports, are not: Module pickling drops the compiled call).
    model: nn.Module
    train_model: nn.Module  # what the loop calls: ``model``, or its DDP wrapper in a job of N
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler
    loader: TrainBatches
    val_loader: Iterable[Batch] | None  # None: no val split (val_fraction=0), no validation
    steps_per_epoch: int
    loss: LossFn  # loss(logits, labels, images) of one micro-batch
    # Frozen, not checkpointed: a resume reloads it from cfg.distill.teacher.
    teacher: nn.Module | None = None

    def new_state(self) -> TrainState:
        device = self.runtime.device
        return TrainState(
            loss_sum=torch.zeros((), dtype=torch.float64, device=device),
            correct=torch.zeros((), dtype=torch.int64, device=device),
        )

    def checkpoint_state(self, state: TrainState, run_id: str | None) -> dict[str, Any]:
        """Everything a resume needs. Every rank calls it (the epoch's running sums are
        summed over the ranks into rank 0's copy); rank 0 writes it."""
        progress_state = asdict(state)
        loss_sum, correct, seen = state.global_counts(self.world)
        progress_state.update(
            loss_sum=torch.tensor(loss_sum, dtype=torch.float64),
            correct=torch.tensor(int(correct), dtype=torch.int64),
            seen=int(seen),
        )
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "progress": progress_state,
            "run_id": run_id,
            # Checkpoints travel (Ray storage); a resume checks only what the run computes.
            "config": config_to_dict(redacted(self.cfg)),
        }

    def restore(self, checkpoint: dict[str, Any]) -> TrainState:
        """Load a checkpoint's states; returns the training state it recorded."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        restore_rng_state(checkpoint["rng"])
        state = TrainState(**checkpoint["progress"])
        device = self.runtime.device
        state.loss_sum, state.correct = (
            state.loss_sum.to(device),
            state.correct.to(device),
        )
        if not self.world.is_main:
            # The checkpoint holds the epoch's running sums over all ranks: rank 0 carries them.
            state.loss_sum.zero_()
            state.correct.zero_()
            state.seen = 0
        return state

    def share_main_buffers(self) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics), the ones it checkpoints:
        each rank's last forward updated its own from its own images."""
        self.world.broadcast_(*self.model.buffers())

    def gradient_sync(self, sync: bool) -> AbstractContextManager[Any]:
        """Inside it, a DDP backward all-reduces gradients only if ``sync``: the micro-batches
        of an accumulated step before the last need no all-reduce."""
        if sync or not isinstance(self.train_model, DistributedDataParallel):
            return nullcontext()
        return self.train_model.no_sync()


def check_batch_divides(cfg: TrainConfig, processes: int) -> None:
    """Every process of a job trains on an equal share of each global batch."""
    check_field(
        cfg,
        "batch_size",
        cfg.data.batch_size % processes == 0,
        f"batch_size ({cfg.data.batch_size}) must divide evenly among the job's "
        f"{processes} processes",
    )


def build_job(cfg: TrainConfig, runtime: Runtime, world: World = SINGLE_PROCESS) -> TrainingJob:
    """Data, model, optimizer, schedule and loaders; data-dependent checks happen here.

    ``batch_size`` is the global micro-batch: in a job of N processes each trains on
    ``batch_size / N`` images of it, so the job computes what one process would.
    """
    check_names(cfg)
    data = build_data(cfg.data, cfg.seed)
    batch, accum = cfg.data.batch_size, cfg.optim.accumulation_steps
    check_batch_divides(cfg, world.size)
    check_field(
        cfg,
        "batch_size",
        batch * accum <= data.num_train,
        f"batch_size x accumulation_steps ({batch * accum}) is larger than the "
        f"{data.num_train} training images",
    )
    steps_per_epoch = data.num_train // (batch * accum)

    model = build_classifier(cfg, data.num_classes, data.mean, data.std, data.sample_images)
    model = model.to(runtime.device).to(memory_format=runtime.memory_format)
    if runtime.compile:
        # In place and inside the DDP wrapper, as torch's guide to where to apply compile
        # advises: the module stays itself, so its state_dict (checkpoints, resumes) has no
        # "_orig_mod." prefix, and evaluation calls it compiled too. Compilation is lazy:
        # the first forward in each mode (train, eval) compiles.
        model.compile()
    train_model: nn.Module = model
    if world.distributed:
        # DDP copies rank 0's weights to every rank here, then all-reduces the gradients.
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=device_ids)
    optimizer = create_optimizer(model, cfg.optim, global_batch=batch * accum)
    device, memory_format = runtime.device, runtime.memory_format
    teacher = None
    if cfg.distill.teacher:
        teacher = load_teacher(cfg, data.num_classes, data.sample_images(1)[0], device)
    shard = {"rank": world.rank, "num_ranks": world.size}
    return TrainingJob(
        cfg=cfg,
        runtime=runtime,
        world=world,
        data=data,
        model=model,
        train_model=train_model,
        optimizer=optimizer,
        scheduler=create_scheduler(optimizer, cfg.optim, steps_per_epoch, cfg.epochs),
        scaler=torch.amp.GradScaler(runtime.device.type, enabled=runtime.uses_grad_scaler),
        loader=create_train_loader(
            data,
            cfg.data,
            seed=cfg.seed,
            samples_per_epoch=steps_per_epoch * accum * batch,
            device=device,
            memory_format=memory_format,
            **shard,
        ),
        val_loader=(
            create_eval_loader(data, "val", cfg.data, device, memory_format, **shard)
            if "val" in data.split_names
            else None
        ),
        steps_per_epoch=steps_per_epoch,
        loss=create_loss(cfg, teacher),
        teacher=teacher,
    )
