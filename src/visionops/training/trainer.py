"""``train(cfg) -> TrainResult``: the one training loop every entry point calls.

The CLI, and the tuners, distributed launchers and schedulers built on it, all call this
function; it keeps no state between calls.

    >>> from visionops.config import TrainConfig
    >>> from visionops.training import train
    >>> cfg = TrainConfig(epochs=2, data={"dataset": "synthetic"})
    >>> result = train(cfg)  # doctest: +SKIP
    >>> again = train(cfg, resume=result.run_dir)  # doctest: +SKIP

Which run to resume is the job's argument (``resume``), not part of the configuration: the
configuration says what the run computes, and a resume must match the saved one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visionops import names
from visionops.config import (
    RUN_OPTIONS,
    TrainConfig,
    config_differences,
    flatten_config,
    load_config,
    save_config,
    warmup_epochs_for,
)
from visionops.errors import CheckpointError, ConfigError, TrainingInterrupted, VisionOpsError
from visionops.tracking import RunTracker
from visionops.tracking.pushgateway import ProgressPusher
from visionops.tracking.tags import run_tags
from visionops.training import checkpoint as ckpt
from visionops.training import elastic
from visionops.training.evaluate import EvalResult, evaluate
from visionops.training.finalize import finalize_run
from visionops.training.job import TrainingJob, TrainState, build_job
from visionops.training.optim import scaled_lr
from visionops.training.progress import ProgressReporter, create_progress
from visionops.training.runtime import Runtime, resolve_runtime, seed_everything
from visionops.training.stop import GracefulStop
from visionops.training.world import World, current_world, join_process_group

logger = logging.getLogger("visionops.train")


@dataclass(frozen=True)
class EpochEnd:
    """What ``train``'s ``on_epoch_end`` callback is told after each epoch's checkpoint."""

    epoch: int  # epochs completed so far (1-based)
    metrics: dict[str, float]  # names.TRAIN_LOSS, names.VAL_ACCURACY, ... (see names.py)
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


def train(
    cfg: TrainConfig,
    on_epoch_end: EpochCallback | None = None,
    *,
    resume: str | Path | None = None,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` with everything recorded in MLflow.

    In a job of N processes (torchrun, Ray Train) every process calls it; they train one model
    with DDP, and rank 0 alone tracks, checkpoints and registers it.

    Args:
        cfg: the resolved configuration.
        on_epoch_end: called after every epoch, once its metrics are logged and its checkpoint
            is written, so the checkpoint it names already holds that epoch. Ray Tune reports
            through it; an exception it raises ends the run as FAILED.
        resume: continue a run from its newest valid checkpoint, in the same MLflow run, as
            ``visionops train --resume RUN`` does: ``"latest"`` (the newest run under
            ``output_dir``), a run id, a run folder or a checkpoint file. ``cfg`` must match
            the run's saved configuration but for its run options. Read by rank 0 alone.

    Raises:
        ConfigError, DataError, CheckpointError: invalid input, reported before any work.
        TrainingInterrupted: SIGINT/SIGTERM stopped the run after writing a checkpoint.
    """
    runtime = resolve_runtime(cfg, current_world().local_rank)
    with join_process_group(runtime.device) as world:
        # torchrun restarts every node's workers, but only the failed one's launcher counts it.
        restarted = world.any(elastic.restart_count() > 0, runtime.device)
        target = None if resume is None else str(resume)
        if restarted and world.is_main:
            # The other ranks get the checkpoint from rank 0.
            target = elastic.run_to_resume(cfg, target)
        return _train(cfg, runtime, world, on_epoch_end, target)


def _train(
    cfg: TrainConfig,
    runtime: Runtime,
    world: World,
    on_epoch_end: EpochCallback | None,
    resume: str | None,
) -> TrainResult:
    resume_dir, resumed = _load_resume(cfg, resume, world)
    seed_everything(cfg.seed, cfg.deterministic)
    job = build_job(cfg, runtime, world)
    state = job.restore(resumed) if resumed else job.new_state()

    # Only the main process of a distributed job tracks and writes checkpoints.
    tracker = RunTracker(cfg.tracking, enabled=world.is_main)
    run_id = tracker.start(
        {**flatten_config(cfg), **_job_params(cfg, runtime, world)},
        run_tags(runtime.describe()),
        resume_run_id=resumed["run_id"] if resumed else None,
    )
    run_dir = resume_dir or _new_run_dir(cfg, run_id, tracker, create=world.is_main)
    run_id, run_dir = world.from_main((run_id, run_dir))
    tracker.spool_in(run_dir)  # metric points wait there while the tracking server is away
    if world.is_main:
        elastic.note_job_run(cfg, run_dir)
        logger.info("run %s on %s; checkpoints in %s", run_id, _describe(runtime, world), run_dir)
        _warn_if_unmeasured(cfg, job)
    pusher = ProgressPusher.for_run(tracker)  # --pushgateway: a no-op without it, or off rank 0

    def save() -> Path:
        # Everything logged so far must be in MLflow, or durably in the run's tracking spool,
        # before a checkpoint says it happened.
        tracker.flush()
        path = ckpt.checkpoint_path(run_dir, state.step)
        checkpoint = job.checkpoint_state(state, run_id)  # on every rank: it sums over them
        if world.is_main:
            ckpt.save_checkpoint(checkpoint, path)
            ckpt.prune_checkpoints(run_dir, cfg.checkpoint.keep_checkpoints)
        return path

    def log_step(metrics: dict[str, float]) -> None:
        tracker.log_metrics(metrics, step=state.step)
        pusher.log_step(state.step, metrics)

    def interrupted(signal_name: str | None, path: Path) -> TrainingInterrupted:
        return TrainingInterrupted(
            f"training stopped by {signal_name}; checkpoint saved to {path}. "
            f"Resume with: visionops train --resume {run_dir}",
            checkpoint=str(path),
            run_id=run_id,
        )

    status = "FAILED"
    last_val: EvalResult | None = None
    pusher.start(state.epoch, state.step)
    try:
        with (
            GracefulStop() as stop,
            create_progress(cfg.epochs, job.steps_per_epoch, shown=world.is_main) as bar,
        ):
            while state.epoch < cfg.epochs:
                epoch_start = time.perf_counter()
                stopped_at = _train_epoch(job, state, log_step, bar, stop, save)
                if stopped_at is not None:
                    raise interrupted(stop.signal_name, stopped_at)

                job.share_main_buffers()
                last_val = _validate(job)
                metrics = state.finish_epoch(last_val, time.perf_counter() - epoch_start, world)
                tracker.log_metrics(metrics, step=state.epoch)
                pusher.log_epoch(state.epoch, state.step, metrics)
                bar.end_epoch(state.epoch - 1, metrics)
                path = save()
                if on_epoch_end is not None:
                    on_epoch_end(EpochEnd(state.epoch, metrics, path, run_dir, run_id))
                if stop.stop_now(world, runtime.device, synchronised=True):
                    raise interrupted(stop.signal_name, path)

        final = finalize_run(job, tracker, state.history, last_val)
        status = "FINISHED"
        return TrainResult(
            run_id=run_id,
            model_uri=final.model_uri,
            registered_version=final.registered_version,
            metrics=final.metrics,
            run_dir=run_dir,
            epochs_completed=state.epoch,
        )
    except (TrainingInterrupted, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        # torchrun SIGTERMs the survivors of a failed job as their error unwinds to here: the
        # signal must not cut short the status (and the last points) MLflow is being sent.
        with GracefulStop():
            pusher.finish(status)
            tracker.end(status)


def _train_epoch(
    job: TrainingJob,
    state: TrainState,
    log_step: Callable[[dict[str, float]], None],
    bar: ProgressReporter,
    stop: GracefulStop,
    save: Callable[[], Path],
) -> Path | None:
    """Train on the rest of epoch ``state.epoch``; returns the checkpoint if told to stop.

    ``log_step`` records an optimizer step's metrics (MLflow, the Pushgateway)."""
    cfg, runtime, world = job.cfg, job.runtime, job.world
    accum, steps_per_epoch = cfg.optim.accumulation_steps, job.steps_per_epoch
    every_n = cfg.checkpoint.checkpoint_every_n_steps
    job.loader.set_epoch(state.epoch, start_batch=state.micro_batches_done)
    bar.start_epoch(state.epoch, state.micro_batches_done // accum)
    job.model.train()
    window_start, window_images = time.perf_counter(), 0
    step_loss = torch.zeros((), device=runtime.device)

    for images, labels in job.loader:  # already on the device (this rank's share)
        completes_step = (state.micro_batches_done + 1) % accum == 0
        with job.gradient_sync(completes_step):
            with runtime.autocast():
                logits = job.train_model(images)
                loss = job.loss(logits, labels, images)
            if state.micro_batches_done % accum == 0:
                # Dropping the gradients right before the backward that recreates them lets the
                # allocator hand the same blocks back; after the step it costs ~4% on CPU.
                job.optimizer.zero_grad(set_to_none=True)
            job.scaler.scale(loss / accum).backward()
        step_loss += loss.detach() / accum
        state.record_batch(loss, logits, labels)
        window_images += len(labels)
        if not completes_step:
            continue  # gradients keep accumulating until the step is complete

        lr = job.optimizer.param_groups[0]["lr"]  # the rate this step uses
        job.scaler.step(job.optimizer)
        job.scaler.update()
        job.scheduler.step()
        state.step += 1
        step_in_epoch = state.micro_batches_done // accum

        log_now = (
            state.step % cfg.tracking.log_every_n_steps == 0 or step_in_epoch == steps_per_epoch
        )
        step_metrics: dict[str, float] = {}
        if log_now:  # .item() waits for the device, so only when the point is logged
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            step_metrics = _step_metrics(state, step_loss, world) | {
                names.LEARNING_RATE: lr,
                # Every rank trains on an equal share of each global batch.
                names.IMAGES_PER_SEC: window_images * world.size / elapsed,
            }
            log_step(step_metrics)
            window_start, window_images = time.perf_counter(), 0
        bar.update(step_in_epoch, step_metrics, log_line=log_now)
        step_loss.zero_()

        # The epoch-end checkpoint comes after validation, in train().
        mid_epoch = step_in_epoch < steps_per_epoch
        stop_now = stop.stop_now(world, runtime.device, synchronised=log_now)
        if mid_epoch and (stop_now or (every_n and state.step % every_n == 0)):
            path = save()
            if stop_now:
                return path
    return None


def _validate(job: TrainingJob) -> EvalResult | None:
    """The epoch's validation pass over the val split (each rank its shard); None in a final
    training on every image (``val_fraction=0``), which holds out nothing to validate on."""
    if job.val_loader is None:
        return None
    job.model.eval()
    return evaluate(
        job.model,
        job.val_loader,
        job.runtime,
        job.data.num_classes,
        tta=job.cfg.data.tta,
        world=job.world,
    )


def _step_metrics(state: TrainState, step_loss: torch.Tensor, world: World) -> dict[str, float]:
    """The step's loss and the epoch's running accuracy, over all ranks."""
    device = step_loss.device
    seen = torch.tensor(float(state.seen), dtype=torch.float64, device=device)
    sums = torch.stack([step_loss.double(), state.correct.double(), seen])
    world.sum_(sums)
    loss, correct, seen_total = sums.tolist()
    return {
        names.STEP_LOSS: loss / world.size,
        names.RUNNING_ACCURACY: correct / max(seen_total, 1),
    }


def _job_params(cfg: TrainConfig, runtime: Runtime, world: World) -> dict[str, str]:
    """What the config only implies: the job's size, global batch, effective rate and
    warm-up, and whether the model is compiled (as the run's first process resolved it)."""
    global_batch = cfg.data.batch_size * cfg.optim.accumulation_steps
    return {
        names.WORLD_SIZE_PARAM: str(world.size),
        names.GLOBAL_BATCH_PARAM: str(global_batch),
        names.EFFECTIVE_LR_PARAM: str(scaled_lr(cfg.optim, global_batch)),
        names.EFFECTIVE_WARMUP_PARAM: str(warmup_epochs_for(cfg.optim, cfg.epochs)),
        names.EFFECTIVE_COMPILE_PARAM: "on" if runtime.compile else "off",
    }


def _warn_if_unmeasured(cfg: TrainConfig, job: TrainingJob) -> None:
    """A final training (``val_fraction=0``) on data without a test split is allowed, as its
    model may be measured later on a test set of its own (``visionops evaluate --data-dir``),
    but it is said up front, not discovered after the run."""
    if job.val_loader is None and job.data.test is None:
        logger.warning(
            "no accuracy will be measured: val_fraction=0 holds out no validation images and "
            "dataset %r has no test split; for one, give the data a test split (an image "
            "folder's data_dir/test/<class>/) or set val_fraction > 0",
            cfg.data.dataset,
        )


def _describe(runtime: Runtime, world: World) -> str:
    if not world.distributed:
        return runtime.describe()
    return f"{world.size} processes ({runtime.describe()} on rank 0)"


def _new_run_dir(cfg: TrainConfig, run_id: str | None, tracker: RunTracker, create: bool) -> Path:
    run_dir = cfg.checkpoint.output_dir / (run_id or time.strftime("run-%Y%m%d-%H%M%S"))
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / names.RUN_CONFIG_ARTIFACT)
        tracker.log_artifact(run_dir / names.RUN_CONFIG_ARTIFACT)
    return run_dir


def saved_run(resume: str, output_dir: Path) -> tuple[Path, TrainConfig]:
    """The run folder ``--resume`` designates and the configuration it was started with."""
    run_dir, _ = ckpt.resolve_resume(resume, output_dir)
    saved = run_dir / names.RUN_CONFIG_ARTIFACT
    if not saved.is_file():
        raise CheckpointError(f"{run_dir} has no config.yaml; is it a visionops run folder?")
    return run_dir, load_config(saved)


def _load_resume(
    cfg: TrainConfig, resume: str | None, world: World
) -> tuple[Path | None, dict[str, Any] | None]:
    """The run folder and checkpoint ``resume`` designates (none without one); checks the
    config still matches.

    Rank 0 reads the checkpoint and hands it to the other ranks, which need not see the same
    file system (nodes of a multi-node job).
    """
    loaded: tuple[Path | None, dict[str, Any] | None] | VisionOpsError = (None, None)
    if world.is_main:
        try:
            loaded = _read_resume(cfg, resume)
        except VisionOpsError as error:
            loaded = error  # raised on every rank, or the others would wait for rank 0
    loaded = world.from_main(loaded)
    if isinstance(loaded, VisionOpsError):
        raise loaded
    return loaded


def _read_resume(cfg: TrainConfig, resume: str | None) -> tuple[Path | None, dict[str, Any] | None]:
    if resume is None:
        return None, None
    path, state = ckpt.load_resume_state(resume, cfg.checkpoint.output_dir)
    logger.info("resuming from %s", path)
    saved = TrainConfig.model_validate(state["config"])
    changed = config_differences(saved, cfg, ignore=RUN_OPTIONS)
    if changed:
        raise ConfigError(
            f"--resume continues the saved configuration of {path}, but these fields differ: "
            + "; ".join(changed)
        )
    return path.parent.parent, state
