"""Elastic restarts: a torchrun job that restarts its workers continues the run it started.

torchrun (``--max-restarts K``) restarts every worker of a job when one fails, with the same
command line and ``TORCHELASTIC_RESTART_COUNT`` raised by one. The command cannot name the run
folder (it did not exist at launch), so rank 0 notes it under the job's id when it creates it,
and the restarted rank 0 resumes from that folder's newest checkpoint: the same MLflow run,
no epoch trained or logged twice.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from visionops import env
from visionops.config import TrainConfig
from visionops.training import checkpoint as ckpt

logger = logging.getLogger(__name__)

_MARKERS = ".elastic-jobs"  # in output_dir: <job id>.json -> {"run_dir": ...}


def _marker(cfg: TrainConfig) -> Path | None:
    job_id = env.ELASTIC_RUN_ID.get()
    if not job_id:
        return None
    return cfg.checkpoint.output_dir / _MARKERS / f"{job_id}.json"


def restart_count() -> int:
    """How many times this node's torchrun launcher has restarted the job (0 outside one)."""
    return env.ELASTIC_RESTART_COUNT.get()


def run_to_resume(cfg: TrainConfig, resume: str | None) -> str | None:
    """What the restarted job resumes (rank 0's call): the run it started, or ``resume``
    itself when the job was asked to resume a run of its own (``--resume``) or had no run
    with a checkpoint yet.

    Whether the job restarted is for the caller to find out from every rank: torchrun restarts
    the workers of all nodes, but only the node whose worker failed counts the restart.
    """
    marker = _marker(cfg)
    if marker is None or resume is not None:
        return resume
    if not marker.is_file():
        logger.warning("the job restarted before it had created its run; starting it")
        return None
    run_dir = Path(json.loads(marker.read_text())["run_dir"])
    if not ckpt.list_checkpoints(run_dir):
        logger.warning("the job restarted; %s has no checkpoint yet, starting over", run_dir)
        return None
    logger.warning("the job restarted: resuming %s from its newest checkpoint", run_dir)
    return str(run_dir)


def note_job_run(cfg: TrainConfig, run_dir: Path) -> None:
    """Record ``run_dir`` as the run of this torchrun job (rank 0, once the folder exists)."""
    marker = _marker(cfg)
    if marker is None:
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_dir": str(run_dir.resolve())}))
