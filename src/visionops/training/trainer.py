"""``train(cfg) -> TrainResult``: the one training loop every entry point calls.

The CLI, Ray Tune, Ray Train, torchrun and Airflow all wrap this function; it keeps no state
between calls.

    >>> from visionops.config import TrainConfig
    >>> from visionops.training import train
    >>> result = train(TrainConfig(epochs=2, data={"dataset": "synthetic"}))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from visionops.config import (
    TrainConfig,
    check_field,
    config_differences,
    config_to_dict,
    flatten_config,
    load_config,
    save_config,
)
from visionops.data import EpochSampler, build_data, eval_loader, train_loader
from visionops.errors import CheckpointError, ConfigError, TrainingInterrupted
from visionops.models import ImageClassifier, create_model
from visionops.tracking import RunTracker
from visionops.tracking.tags import run_tags
from visionops.training import checkpoint as ckpt
from visionops.training.evaluate import EvalResult, evaluate
from visionops.training.finalize import finalize_run
from visionops.training.optim import create_optimizer, create_scheduler
from visionops.training.progress import create_progress
from visionops.training.runtime import (
    capture_rng_state,
    resolve_runtime,
    restore_rng_state,
    seed_everything,
)
from visionops.training.stop import GracefulStop

logger = logging.getLogger("visionops.train")

#: Fields a resumed run may change: they do not alter what the run computes.
RESUMABLE_CHANGES = ("resume", "device", "num_workers", "data_dir", "tracking_uri", "register_as")


@dataclass
class TrainResult:
    run_id: str | None
    model_uri: str | None
    registered_version: int | None
    metrics: dict[str, float]
    run_dir: Path
    epochs_completed: int


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # the epoch in progress (0-based)
    micro_batches_done: int = 0  # micro-batches of that epoch already trained on
    step: int = 0  # optimizer steps over the whole run
    # This epoch's running sums stay on the device: reading them every step would force a
    # host-device sync per step on GPUs.
    loss_sum: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    correct: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.int64))
    seen: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # finished epochs' metrics

    def reset_epoch(self, device: torch.device) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen = 0


def train(cfg: TrainConfig) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` with everything recorded in MLflow.

    Raises:
        ConfigError, DataError, CheckpointError: invalid input, reported before any work.
        TrainingInterrupted: SIGINT/SIGTERM stopped the run after writing a checkpoint.
    """
    runtime = resolve_runtime(cfg)
    resume_from, resumed = _load_resume(cfg)
    seed_everything(cfg.seed, cfg.deterministic)
    data = build_data(cfg.data, cfg.seed)
    batch, accum = cfg.data.batch_size, cfg.optim.accumulation_steps
    check_field(
        cfg,
        "batch_size",
        batch * accum <= data.num_train,
        f"batch_size x accumulation_steps ({batch * accum}) is larger than the "
        f"{data.num_train} training images",
    )
    steps_per_epoch = data.num_train // (batch * accum)

    backbone = create_model(
        cfg.model.name,
        data.num_classes,
        small_input_stem=cfg.model.small_input_stem,
        width_multiplier=cfg.model.width_multiplier,
    )
    model = ImageClassifier(backbone, data.mean, data.std).to(runtime.device)
    model = model.to(memory_format=runtime.memory_format)
    optimizer = create_optimizer(model, cfg.optim)
    scheduler = create_scheduler(optimizer, cfg.optim, steps_per_epoch, cfg.epochs)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.uses_grad_scaler)
    sampler = EpochSampler(data.num_train, steps_per_epoch * accum * batch, cfg.seed)
    pin = runtime.device.type == "cuda"
    loader = train_loader(data, cfg.data, sampler, cfg.seed, pin_memory=pin)
    val_loader = eval_loader(data.val, cfg.data, data.image_size, pin_memory=pin)

    progress = Progress()
    progress.reset_epoch(runtime.device)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        scaler.load_state_dict(resumed["scaler"])
        progress = _restore_progress(resumed["progress"], runtime.device)
        restore_rng_state(resumed["rng"])

    tracker = RunTracker(cfg.tracking)
    run_id = tracker.start(
        flatten_config(cfg),
        run_tags(runtime.describe()),
        resume_run_id=resumed["run_id"] if resumed else None,
    )
    run_dir = resume_from or cfg.checkpoint.output_dir / (
        run_id or time.strftime("run-%Y%m%d-%H%M%S")
    )
    if resumed is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        tracker.log_artifact(run_dir / "config.yaml")
    logger.info(
        "run %s on %s; checkpoints in %s", run_id, runtime.describe(), run_dir / ckpt.CHECKPOINT_DIR
    )

    def save(stop_signal: str | None = None) -> Path:
        # Everything logged so far must be in MLflow before the checkpoint claims it happened.
        tracker.flush()
        path = ckpt.checkpoint_path(run_dir, progress.step)
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": capture_rng_state(),
            "progress": _progress_state(progress),
            "sampler": sampler.state_dict(),
            "run_id": run_id,
            "config": config_to_dict(cfg),
        }
        ckpt.save_checkpoint(state, path)
        ckpt.prune_checkpoints(run_dir, cfg.checkpoint.keep_checkpoints)
        return path

    status = "FAILED"
    last_val: EvalResult | None = None
    try:
        with GracefulStop() as stop, create_progress(cfg.epochs, steps_per_epoch) as bar:
            for epoch in range(progress.epoch, cfg.epochs):
                progress.epoch = epoch
                sampler.set_epoch(epoch, start=progress.micro_batches_done * batch)
                bar.start_epoch(epoch, progress.micro_batches_done // accum)
                model.train()
                epoch_start = window_start = time.perf_counter()
                window_images = 0
                step_loss = torch.zeros((), device=runtime.device)
                for images, labels in loader:
                    images = images.to(
                        runtime.device, non_blocking=True, memory_format=runtime.memory_format
                    )
                    labels = labels.to(runtime.device, non_blocking=True)
                    with runtime.autocast():
                        logits = model(images)
                        loss = F.cross_entropy(
                            logits, labels, label_smoothing=cfg.optim.label_smoothing
                        )
                    scaler.scale(loss / accum).backward()
                    step_loss += loss.detach() / accum
                    progress.loss_sum += loss.detach() * len(labels)
                    progress.correct += (logits.argmax(dim=1) == labels).sum()
                    progress.seen += len(labels)
                    progress.micro_batches_done += 1
                    window_images += len(labels)
                    if progress.micro_batches_done % accum:
                        continue  # gradients keep accumulating until the step is complete

                    lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    progress.step += 1
                    step_in_epoch = progress.micro_batches_done // accum

                    if (
                        progress.step % cfg.tracking.log_every_n_steps == 0
                        or step_in_epoch == steps_per_epoch
                    ):
                        elapsed = time.perf_counter() - window_start
                        step_metrics = {
                            "train/step_loss": step_loss.item(),
                            "train/lr": lr,
                            "train/images_per_sec": window_images / max(elapsed, 1e-9),
                        }
                        tracker.log_metrics(step_metrics, step=progress.step)
                        bar.update(step_in_epoch, step_metrics, log_line=True)
                        window_start, window_images = time.perf_counter(), 0
                    else:
                        bar.update(step_in_epoch, {}, log_line=False)
                    step_loss.zero_()

                    every = cfg.checkpoint.checkpoint_every_n_steps
                    if step_in_epoch < steps_per_epoch and (
                        stop.requested or (every and progress.step % every == 0)
                    ):
                        path = save()
                        if stop.requested:
                            raise _interrupted(stop.signal_name, path, run_id, run_dir)

                last_val = evaluate(model, val_loader, runtime, data.num_classes)
                epoch_metrics = {
                    "train_loss": float(progress.loss_sum) / progress.seen,
                    "train_accuracy": float(progress.correct) / progress.seen,
                    "val_loss": last_val.loss,
                    "val_accuracy": last_val.accuracy,
                    "epoch_time_sec": time.perf_counter() - epoch_start,
                }
                tracker.log_metrics(
                    {f"epoch/{k}": v for k, v in epoch_metrics.items()}, step=epoch + 1
                )
                progress.history.append({"epoch": epoch + 1, **epoch_metrics})
                bar.end_epoch(epoch, epoch_metrics)
                progress.epoch, progress.micro_batches_done = epoch + 1, 0
                progress.reset_epoch(runtime.device)
                path = save()
                if stop.requested:
                    raise _interrupted(stop.signal_name, path, run_id, run_dir)

        result = finalize_run(
            cfg, model, data, runtime, tracker, progress.history, val_loader, last_val
        )
        status = "FINISHED"
        return TrainResult(
            run_id=run_id,
            model_uri=result.model_uri,
            registered_version=result.registered_version,
            metrics=result.metrics,
            run_dir=run_dir,
            epochs_completed=progress.epoch,
        )
    except (TrainingInterrupted, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        tracker.end(status)


def saved_run(resume: str, output_dir: Path) -> tuple[Path, TrainConfig]:
    """The run folder ``--resume`` designates and the configuration it was started with."""
    run_dir, _ = ckpt.resolve_resume(resume, output_dir)
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise CheckpointError(f"{run_dir} has no config.yaml; is it a visionops run folder?")
    return run_dir, load_config(saved)


def _load_resume(cfg: TrainConfig) -> tuple[Path | None, dict[str, Any] | None]:
    """The run folder and checkpoint to resume from; checks the config still matches."""
    if cfg.checkpoint.resume is None:
        return None, None
    path, state = ckpt.load_resume_state(cfg.checkpoint.resume, cfg.checkpoint.output_dir)
    logger.info("resuming from %s", path)
    saved = TrainConfig.model_validate(state["config"])
    changed = config_differences(saved, cfg, ignore=RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(
            f"--resume continues the saved configuration of {path}, but these fields differ: "
            + "; ".join(changed)
        )
    return path.parent.parent, state


def _progress_state(progress: Progress) -> dict[str, Any]:
    state = asdict(progress)
    state.update(loss_sum=progress.loss_sum.detach().cpu(), correct=progress.correct.detach().cpu())
    return state


def _restore_progress(state: dict[str, Any], device: torch.device) -> Progress:
    progress = Progress(**state)
    progress.loss_sum, progress.correct = progress.loss_sum.to(device), progress.correct.to(device)
    return progress


def _interrupted(
    signal_name: str | None, path: Path, run_id: str | None, run_dir: Path
) -> TrainingInterrupted:
    return TrainingInterrupted(
        f"training stopped by {signal_name}; checkpoint saved to {path}. "
        f"Resume with: visionops train --resume {run_dir}",
        checkpoint=str(path),
        run_id=run_id,
    )
