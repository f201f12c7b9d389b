"""Atomic checkpoints, newest-valid lookup and retention.

A checkpoint is ``<run dir>/checkpoints/step-<global step>.pt``. It is written to a temporary
file in the same folder, fsynced and moved into place with ``os.replace``, so a crash at any
moment leaves either the previous file set or the new one, never a half-written checkpoint
under a real name. Loading uses ``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from visionops.errors import CheckpointError
from visionops.files import write_atomically

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
FORMAT_VERSION = 1
_NAME = re.compile(r"^step-(\d+)\.pt$")
_REQUIRED_KEYS = {"format_version", "model", "optimizer", "scheduler", "progress", "rng", "run_id"}


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINT_DIR / f"step-{step:09d}.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename, fsync the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run, newest (highest step) first."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and sanity-check one checkpoint file.

    Raises:
        CheckpointError: the file is unreadable, truncated or not a visionops checkpoint.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/corrupt zips
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, dict) or not state.keys() >= _REQUIRED_KEYS:
        raise CheckpointError(f"checkpoint {path} is not a visionops checkpoint (missing keys)")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format {state['format_version']}; "
            f"this visionops reads format {FORMAT_VERSION}"
        )
    return state


def load_newest_valid(
    run_dir: Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint of a run that loads; warns about each newer one that does not.

    Raises:
        CheckpointError: the run has no loadable checkpoint (never a silent fresh start).
    """
    candidates = list_checkpoints(run_dir)
    if not candidates:
        raise CheckpointError(f"no checkpoints in {run_dir / CHECKPOINT_DIR}; nothing to resume")
    for path in candidates:
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as exc:
            logger.warning("skipping checkpoint: %s; trying the previous one", exc)
    raise CheckpointError(
        f"none of the {len(candidates)} checkpoints in {run_dir / CHECKPOINT_DIR} is readable; "
        "cannot resume"
    )


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints and stale temp files of dead writers."""
    for old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    for stale in (run_dir / CHECKPOINT_DIR).glob(".step-*.tmp"):
        stale.unlink(missing_ok=True)


def resolve_resume(resume: str, output_dir: Path) -> tuple[Path, Path | None]:
    """Turn ``--resume`` into ``(run dir, explicit checkpoint file or None)``.

    ``resume`` is ``latest`` (the run under ``output_dir`` with the newest checkpoint), a run
    id (a folder of ``output_dir``), a run folder, or one checkpoint file.
    """
    if resume == "latest":
        runs = (
            [d for d in output_dir.glob("*") if list_checkpoints(d)] if output_dir.is_dir() else []
        )
        if not runs:
            raise CheckpointError(f"--resume latest: no run with checkpoints under {output_dir}")
        newest = max(runs, key=lambda d: list_checkpoints(d)[0].stat().st_mtime)
        return newest, None
    target = Path(resume)
    if target.is_file():
        return target.parent.parent, target
    if target.is_dir():
        return (target.parent if target.name == CHECKPOINT_DIR else target), None
    if (output_dir / resume).is_dir():
        return output_dir / resume, None
    raise CheckpointError(
        f"--resume {resume!r} is neither 'latest', a checkpoint file, a run folder nor a run id "
        f"under {output_dir}"
    )


def load_resume_state(resume: str, output_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint ``--resume`` designates, already validated."""
    run_dir, explicit = resolve_resume(resume, output_dir)
    if explicit is not None:
        return explicit, load_checkpoint(explicit)
    return load_newest_valid(run_dir)
