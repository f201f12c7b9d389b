"""``train(cfg) -> TrainResult``: the one training loop every entry point calls.

The CLI, and the tuners, distributed launchers and schedulers built on it, all call this
function; it keeps no state between calls.

    >>> from visionops.config import TrainConfig
    >>> from visionops.training import train
    >>> result = train(TrainConfig(epochs=2, data={"dataset": "synthetic"}))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from visionops.config import (
    TrainConfig,
    config_differences,
    flatten_config,
    load_config,
    save_config,
)
from visionops.errors import CheckpointError, ConfigError, TrainingInterrupted
from visionops.tracking import RunTracker
from visionops.tracking.tags import run_tags
from visionops.training import checkpoint as ckpt
from visionops.training.evaluate import EvalResult, evaluate
from visionops.training.finalize import finalize_run
from visionops.training.job import Progress, TrainingJob, build_job
from visionops.training.progress import ProgressReporter, create_progress
from visionops.training.runtime import is_main_process, resolve_runtime, seed_everything
from visionops.training.stop import GracefulStop

logger = logging.getLogger("visionops.train")

#: Fields a resumed run may change: they do not alter what the run computes.
RESUMABLE_CHANGES = (
    "resume",
    "device",
    "num_workers",
    "pin_memory",
    "persistent_workers",
    "prefetch_factor",
    "data_dir",
    "cache_dir",
    "tracking_uri",
    "register_as",
    # A checkpoint file names its run folder itself; output_dir only places new runs.
    "output_dir",
)


@dataclass(frozen=True)
class EpochEnd:
    """What ``train``'s ``on_epoch_end`` callback is told after each epoch's checkpoint."""

    epoch: int  # epochs completed so far (1-based)
    metrics: dict[str, float]  # train_loss, train_accuracy, val_loss, val_accuracy, ...
    checkpoint: Path  # the checkpoint just written; resuming from it continues the same run
    run_dir: Path
    run_id: str | None


EpochCallback = Callable[[EpochEnd], None]


@dataclass
class TrainResult:
    run_id: str | None
    model_uri: str | None
    registered_version: int | None
    metrics: dict[str, float]
    run_dir: Path
    epochs_completed: int


def train(cfg: TrainConfig, on_epoch_end: EpochCallback | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` with everything recorded in MLflow.

    Args:
        cfg: the resolved configuration.
        on_epoch_end: called after every epoch, once its metrics are logged and its checkpoint
            is written, so the checkpoint it names already holds that epoch. Ray Tune reports
            through it; an exception it raises ends the run as FAILED.

    Raises:
        ConfigError, DataError, CheckpointError: invalid input, reported before any work.
        TrainingInterrupted: SIGINT/SIGTERM stopped the run after writing a checkpoint.
    """
    runtime = resolve_runtime(cfg)
    resume_dir, resumed = _load_resume(cfg)
    seed_everything(cfg.seed, cfg.deterministic)
    job = build_job(cfg, runtime)
    progress = job.restore(resumed) if resumed else job.new_progress()

    # Only the main process of a distributed job tracks and writes checkpoints.
    main_process = is_main_process()
    tracker = RunTracker(cfg.tracking, enabled=main_process)
    run_id = tracker.start(
        flatten_config(cfg),
        run_tags(runtime.describe()),
        resume_run_id=resumed["run_id"] if resumed else None,
    )
    run_dir = resume_dir or _new_run_dir(cfg, run_id, tracker, create=main_process)
    tracker.spool_in(run_dir)  # metric points wait there while the tracking server is away
    logger.info("run %s on %s; checkpoints in %s", run_id, runtime.describe(), run_dir)

    def save() -> Path:
        # Everything logged so far must be in MLflow, or durably in the run's tracking spool,
        # before a checkpoint says it happened.
        tracker.flush()
        path = ckpt.checkpoint_path(run_dir, progress.step)
        if main_process:
            ckpt.save_checkpoint(job.checkpoint_state(progress, run_id), path)
            ckpt.prune_checkpoints(run_dir, cfg.checkpoint.keep_checkpoints)
        return path

    def interrupted(signal_name: str | None, path: Path) -> TrainingInterrupted:
        return TrainingInterrupted(
            f"training stopped by {signal_name}; checkpoint saved to {path}. "
            f"Resume with: visionops train --resume {run_dir}",
            checkpoint=str(path),
            run_id=run_id,
        )

    status = "FAILED"
    last_val: EvalResult | None = None
    try:
        with GracefulStop() as stop, create_progress(cfg.epochs, job.steps_per_epoch) as bar:
            while progress.epoch < cfg.epochs:
                epoch_start = time.perf_counter()
                stopped_at = _train_epoch(job, progress, tracker, bar, stop, save)
                if stopped_at is not None:
                    raise interrupted(stop.signal_name, stopped_at)

                job.model.eval()
                last_val = evaluate(
                    job.model, job.val_loader, runtime, job.data.num_classes, tta=cfg.data.tta
                )
                metrics = progress.finish_epoch(last_val, time.perf_counter() - epoch_start)
                tracker.log_metrics({f"epoch/{k}": v for k, v in metrics.items()}, progress.epoch)
                bar.end_epoch(progress.epoch - 1, metrics)
                path = save()
                if on_epoch_end is not None:
                    on_epoch_end(EpochEnd(progress.epoch, metrics, path, run_dir, run_id))
                if stop.requested:
                    raise interrupted(stop.signal_name, path)

        final = finalize_run(job, tracker, progress.history, last_val)
        status = "FINISHED"
        return TrainResult(
            run_id=run_id,
            model_uri=final.model_uri,
            registered_version=final.registered_version,
            metrics=final.metrics,
            run_dir=run_dir,
            epochs_completed=progress.epoch,
        )
    except (TrainingInterrupted, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        tracker.end(status)


def _train_epoch(
    job: TrainingJob,
    progress: Progress,
    tracker: RunTracker,
    bar: ProgressReporter,
    stop: GracefulStop,
    save: Callable[[], Path],
) -> Path | None:
    """Train on the rest of epoch ``progress.epoch``; returns the checkpoint if told to stop."""
    cfg, runtime = job.cfg, job.runtime
    accum, steps_per_epoch = cfg.optim.accumulation_steps, job.steps_per_epoch
    every_n = cfg.checkpoint.checkpoint_every_n_steps
    job.loader.set_epoch(progress.epoch, start_batch=progress.micro_batches_done)
    bar.start_epoch(progress.epoch, progress.micro_batches_done // accum)
    job.model.train()
    window_start, window_images = time.perf_counter(), 0
    step_loss = torch.zeros((), device=runtime.device)

    for images, labels in job.loader:  # already on the device
        with runtime.autocast():
            logits = job.model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=cfg.optim.label_smoothing)
        if progress.micro_batches_done % accum == 0:
            # Dropping the gradients right before the backward that recreates them lets the
            # allocator hand the same blocks back; dropping them after the step costs ~4% on CPU.
            job.optimizer.zero_grad(set_to_none=True)
        job.scaler.scale(loss / accum).backward()
        step_loss += loss.detach() / accum
        progress.record_batch(loss, logits, labels)
        window_images += len(labels)
        if progress.micro_batches_done % accum:
            continue  # gradients keep accumulating until the step is complete

        lr = job.optimizer.param_groups[0]["lr"]  # the rate this step uses
        job.scaler.step(job.optimizer)
        job.scaler.update()
        job.scheduler.step()
        progress.step += 1
        step_in_epoch = progress.micro_batches_done // accum

        log_now = (
            progress.step % cfg.tracking.log_every_n_steps == 0 or step_in_epoch == steps_per_epoch
        )
        step_metrics: dict[str, float] = {}
        if log_now:  # .item() waits for the device, so only when the point is logged
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            step_metrics = {
                "train/step_loss": step_loss.item(),
                "train/running_accuracy": progress.running_accuracy(),
                "train/lr": lr,
                "train/images_per_sec": window_images / elapsed,
            }
            tracker.log_metrics(step_metrics, step=progress.step)
            window_start, window_images = time.perf_counter(), 0
        bar.update(step_in_epoch, step_metrics, log_line=log_now)
        step_loss.zero_()

        # The epoch-end checkpoint comes after validation, in train().
        mid_epoch = step_in_epoch < steps_per_epoch
        if mid_epoch and (stop.requested or (every_n and progress.step % every_n == 0)):
            path = save()
            if stop.requested:
                return path
    return None


def _new_run_dir(cfg: TrainConfig, run_id: str | None, tracker: RunTracker, create: bool) -> Path:
    run_dir = cfg.checkpoint.output_dir / (run_id or time.strftime("run-%Y%m%d-%H%M%S"))
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        tracker.log_artifact(run_dir / "config.yaml")
    return run_dir


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
