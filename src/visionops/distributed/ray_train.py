"""``visionops train --ray-workers N``: the same ``train(cfg)`` as a Ray Train job.

Ray Train's ``TorchTrainer`` starts N worker processes, creates their torch process group and
sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; each worker calls ``train(cfg)``, which joins that
group (``visionops.training.world``). As under torchrun, rank 0 alone tracks the one MLflow
run and writes the visionops checkpoints. After every epoch each worker reports to Ray Train,
and rank 0 attaches the epoch's checkpoint, packed with the run's config and id
(``checkpoint_bundle``), which Ray Train copies to ``<storage_path>/<name>/``. When a worker
fails, Ray Train restarts the worker group (``max_failures`` times) from the newest checkpoint
it has registered (its controller collects reports every 2 s), and rank 0 resumes it in the
same MLflow run; a group that fails before any is registered starts over in a new run.

    visionops train --recipe debug --ray-workers 2                    # a local Ray
    visionops train --recipe cifar10 --ray-workers 4 --use-gpu --address auto

    >>> result = run_ray_train(get_recipe("debug"), num_workers=2)  # doctest: +SKIP
    >>> run_ray_train(get_recipe("debug"), num_workers=2, resume=result.run_dir)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from visionops.config import TrainConfig, config_to_dict, with_run_options
from visionops.distributed.cluster import absolute_tracking_uri, ray_session
from visionops.distributed.launch import DistributedJobFailed
from visionops.distributed.ray_logging import SETUP_HOOK
from visionops.errors import ConfigError, VisionOpsError
from visionops.tracking.client import uri_for_workers
from visionops.training import EpochEnd, TrainResult, train
from visionops.training.checkpoint_bundle import (
    epoch_report,
    pack_checkpoint,
    unpack_checkpoint,
)
from visionops.training.job import check_batch_divides

logger = logging.getLogger(__name__)

#: Ray Train's copy of the run's checkpoints: ``<output_dir>/ray-train/<name>/`` by default.
STORAGE_FOLDER = "ray-train"


@dataclass
class RayTrainResult(TrainResult):
    """What ``train`` returned on rank 0 (``run_dir`` is on rank 0's machine), and where Ray
    Train keeps the job."""

    storage_dir: str = ""  # Ray Train's folder of the job, on its persistent storage
    checkpoint: str | None = None  # the newest checkpoint Ray Train holds


def run_ray_train(
    cfg: TrainConfig,
    num_workers: int,
    address: str | None = None,
    use_gpu: bool = False,
    *,
    max_failures: int = 0,
    storage_path: Path | None = None,
    name: str | None = None,
    resume: str | Path | None = None,
) -> RayTrainResult:
    """Train ``cfg`` on ``num_workers`` Ray Train workers; rank 0 tracks and checkpoints.

    Args:
        cfg: the resolved configuration; ``batch_size`` is the global batch, each worker
            takes ``batch_size / num_workers``.
        num_workers: Ray Train workers (one GPU each with ``use_gpu``, else one CPU each).
        address: an existing Ray cluster; ``None`` starts a local Ray with this machine's CPUs
            (and GPUs) and shuts it down afterwards.
        use_gpu: give each worker a GPU (NCCL); otherwise workers train on CPU (gloo).
        max_failures: restarts of the worker group after a worker fails, each from the newest
            checkpoint reported to Ray Train.
        storage_path: where Ray Train keeps checkpoints (default ``<output_dir>/ray-train``);
            must be a shared file system (NFS, say) when the workers span several machines.
        name: the job's folder under ``storage_path`` (default: ``train-<time>-<id>``).
            A name that already holds a Ray Train job makes Ray Train restore that job.
        resume: continue this run (``train``'s ``resume``: ``"latest"``, a run id, a run
            folder or a checkpoint file); rank 0 reads it, so a path must be on its machine.

    Raises:
        ConfigError: invalid worker count or a batch the workers cannot share evenly.
        DistributedJobFailed: a worker failed and no restarts were left.
        VisionOpsError: what ``train`` raised on a worker (bad data, unusable checkpoint).
    """
    if num_workers < 1:
        raise ConfigError(f"--ray-workers must be at least 1, not {num_workers}")
    if max_failures < 0:
        raise ConfigError(f"--max-restarts must be >= 0, not {max_failures}")
    check_batch_divides(cfg, num_workers)  # as every worker will, but before any starts
    cfg = _portable(cfg)
    resume = _portable_resume(resume)
    storage = (storage_path or cfg.checkpoint.output_dir / STORAGE_FOLDER).expanduser().resolve()
    name = name or f"train-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    from ray.train import WorkerGroupError

    with ray_session(address, num_cpus=None, setup_hook=SETUP_HOOK):
        try:
            trainer = _trainer(cfg, resume, num_workers, use_gpu, max_failures, storage, name)
            result = trainer.fit()
        except WorkerGroupError as failure:
            raise _job_failure(failure) from failure
    trained: TrainResult = result.return_value
    return RayTrainResult(
        **asdict(trained),
        storage_dir=str(result.path),
        checkpoint=result.checkpoint.path if result.checkpoint else None,
    )


def _trainer(
    cfg: TrainConfig,
    resume: str | None,
    num_workers: int,
    use_gpu: bool,
    max_failures: int,
    storage: Path,
    name: str,
) -> Any:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    run_config = RunConfig(
        name=name,
        storage_path=str(storage),
        failure_config=FailureConfig(max_failures=max_failures),
        # The newest checkpoint is all a restart needs; one more guards a torn upload.
        checkpoint_config=CheckpointConfig(num_to_keep=2),
    )
    return TorchTrainer(
        _train_worker,  # type: ignore[arg-type]  # the hint predates Result.return_value
        train_loop_config={"train_config": config_to_dict(cfg), "resume": resume},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=run_config,
    )


def _train_worker(config: dict[str, Any]) -> TrainResult | None:
    """One Ray Train worker: ``train(cfg)`` reporting each epoch; rank 0 returns the result."""
    import ray.train

    cfg = TrainConfig.model_validate(config["train_config"])
    resume: str | None = config.get("resume")
    rank = ray.train.get_context().get_world_rank()
    restored = ray.train.get_checkpoint()
    # Only rank 0 reads the checkpoint to resume (train() hands its state to the others).
    if restored is not None and rank == 0:
        with restored.as_directory() as folder:
            checkpoint = unpack_checkpoint(Path(folder), cfg.checkpoint.output_dir)
        # The run folder, not the file: its newest valid checkpoint may be newer still.
        resume = str(checkpoint.parent.parent)
        logger.warning("Ray Train restarted the job from its checkpoint %s", checkpoint.name)

    def report(end: EpochEnd) -> None:
        metrics = epoch_report(end)
        if rank != 0:
            # Every worker must report as often as rank 0: report() is a barrier.
            ray.train.report(metrics)
            return
        # Ray Train copies the folder into its storage before report() returns; a temporary
        # folder next to the run lets the checkpoint be hard-linked rather than copied.
        with tempfile.TemporaryDirectory(prefix=".ray-train-", dir=end.run_dir) as folder:
            pack_checkpoint(end, Path(folder))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    result = train(cfg, on_epoch_end=report, resume=resume)
    return result if rank == 0 else None  # fit() returns rank 0's


def _portable(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with absolute paths and tracking URI: Ray runs the workers in other folders."""
    fields: dict[str, Any] = {
        # Ray keeps the workers' config (train_loop_config): credentials go by environment.
        "tracking_uri": uri_for_workers(absolute_tracking_uri(cfg)),
        "output_dir": str(cfg.checkpoint.output_dir.expanduser().resolve()),
        "data_dir": str(cfg.data.data_dir.expanduser().resolve()),
    }
    return with_run_options(cfg, **fields)


def _portable_resume(resume: str | Path | None) -> str | None:
    """``resume`` with a path made absolute ('latest' and run ids are kept as they are)."""
    if resume is None:
        return None
    path = Path(resume).expanduser()
    return str(path.resolve()) if path.exists() else str(resume)


def _job_failure(failure: Any) -> VisionOpsError:
    """The error a failed Ray Train job reaches the user as: the visionops error ``train``
    raised on a worker (bad data, say: one clear line), else ``DistributedJobFailed``."""
    errors: dict[int, BaseException] = dict(failure.worker_failures)
    for rank in sorted(errors):
        cause: BaseException | None = errors[rank]
        while cause is not None and not isinstance(cause, VisionOpsError):
            cause = cause.__cause__
        if isinstance(cause, VisionOpsError):
            return cause
    first = errors[min(errors)] if errors else failure
    return DistributedJobFailed(
        f"Ray Train job failed: worker rank {min(errors, default='?')} raised "
        f"{type(first).__name__}: {first}; --max-restarts K restarts the job from its newest "
        "checkpoint up to K times"
    )
