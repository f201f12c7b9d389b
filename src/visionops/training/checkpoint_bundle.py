"""A run's checkpoint as a self-contained folder: the checkpoint file, the run's config and id.

Ray Tune trials and Ray Train jobs hand checkpoints to Ray, which copies them into its storage
and hands the newest back to a restarted trial or worker group, possibly on another machine.
The folder carries what that restart needs to continue the *same* run (and MLflow run):

    pack_checkpoint(end, folder)                   # on_epoch_end: lay out the folder for Ray
    unpack_checkpoint(folder, cfg.checkpoint.output_dir)  # after a restart: put it back
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionops import names
from visionops.training import checkpoint as ckpt

if TYPE_CHECKING:
    from visionops.training.trainer import EpochEnd


def epoch_report(end: EpochEnd) -> dict[str, Any]:
    """What a Ray Tune trial or Ray Train worker reports for an epoch: its metrics, the epoch
    and the MLflow run id, the checkpoint folder laid out by ``pack_checkpoint`` beside it."""
    return {**end.metrics, names.EPOCH_KEY: end.epoch, names.RUN_ID_KEY: end.run_id}


MANIFEST = "visionops-checkpoint.json"  # which run, file and epoch the folder holds


def pack_checkpoint(end: EpochEnd, folder: Path) -> None:
    """Lay out ``folder`` with the epoch's checkpoint, the run's config and its run id.

    Files are hard-linked where possible: Ray copies the folder before it is deleted.
    """
    _link_or_copy(end.checkpoint, folder / end.checkpoint.name)
    config = end.run_dir / names.RUN_CONFIG_ARTIFACT
    if config.is_file():
        _link_or_copy(config, folder / names.RUN_CONFIG_ARTIFACT)
    manifest = {"run_id": end.run_id, "checkpoint": end.checkpoint.name, "epoch": end.epoch}
    (folder / MANIFEST).write_text(json.dumps(manifest))


def unpack_checkpoint(folder: Path, output_dir: Path) -> Path:
    """Put a packed checkpoint back as ``output_dir/<run id>/checkpoints/<file>``.

    Returns the checkpoint file. Resuming its run folder reopens the run's MLflow run instead
    of creating a duplicate; a newer checkpoint already there wins.
    """
    manifest = json.loads((folder / MANIFEST).read_text())
    run_dir = output_dir / (manifest["run_id"] or "run")
    target = ckpt.checkpoint_path(run_dir, 0).with_name(manifest["checkpoint"])
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copy2(folder / manifest["checkpoint"], target)
    packed_config = folder / names.RUN_CONFIG_ARTIFACT
    if packed_config.is_file() and not (run_dir / names.RUN_CONFIG_ARTIFACT).exists():
        shutil.copy2(packed_config, run_dir / names.RUN_CONFIG_ARTIFACT)
    return target


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)
