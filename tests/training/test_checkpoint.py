from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from visionops.errors import CheckpointError
from visionops.training import checkpoint as ckpt
from visionops.training.runtime import capture_rng_state, restore_rng_state


def _state(step: int, payload: torch.Tensor | None = None) -> dict:
    return {
        "model": {"weight": torch.full((3,), float(step)) if payload is None else payload},
        "optimizer": {},
        "scheduler": {},
        "progress": {"step": step},
        "rng": capture_rng_state(),
        "run_id": "run-1",
    }


def _write(run_dir: Path, step: int) -> Path:
    path = ckpt.checkpoint_path(run_dir, step)
    ckpt.save_checkpoint(_state(step), path)
    return path


def test_save_then_load_round_trips_with_weights_only(tmp_path: Path) -> None:
    path = _write(tmp_path, 5)
    loaded = ckpt.load_checkpoint(path)
    assert loaded["progress"] == {"step": 5}
    assert torch.equal(loaded["model"]["weight"], torch.full((3,), 5.0))
    assert not list(path.parent.glob("*.tmp"))


def test_rng_state_survives_a_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    torch.manual_seed(3)
    path = tmp_path / "rng.pt"
    ckpt.save_checkpoint(_state(0), path)
    expected = (random.random(), np.random.rand(), torch.rand(2))
    restore_rng_state(ckpt.load_checkpoint(path)["rng"])
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert (
        expected[0] == again[0] and expected[1] == again[1] and torch.equal(expected[2], again[2])
    )


def test_newest_first_and_pruning_keeps_the_last_k(tmp_path: Path) -> None:
    for step in (10, 30, 20, 40):
        _write(tmp_path, step)
    stale_tmp = tmp_path / ckpt.CHECKPOINT_DIR / ".step-000000050.pt.abc.tmp"
    stale_tmp.write_bytes(b"partial")
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "step-000000040.pt",
        "step-000000030.pt",
    ]
    assert not stale_tmp.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_newest_checkpoint_falls_back_with_a_warning(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path, 1)
    newest = _write(tmp_path, 2)
    data = newest.read_bytes()
    newest.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": os.urandom(len(data)), "empty": b""}[damage]
    )

    with caplog.at_level(logging.WARNING):
        path, state = ckpt.load_newest_valid(tmp_path)

    assert path.name == "step-000000001.pt"
    assert state["progress"] == {"step": 1}
    assert any(newest.name in record.getMessage() for record in caplog.records)


def test_no_valid_checkpoint_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    _write(tmp_path, 1).write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="none of the 1 checkpoints"):
        ckpt.load_newest_valid(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoints"):
        ckpt.load_newest_valid(tmp_path / "elsewhere")


def test_a_foreign_file_is_rejected(tmp_path: Path) -> None:
    path = ckpt.checkpoint_path(tmp_path, 1)
    path.parent.mkdir(parents=True)
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a visionops checkpoint"):
        ckpt.load_checkpoint(path)


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = ckpt.checkpoint_path(tmp_path, 1)
    path.parent.mkdir(parents=True)
    torch.save({**_state(1), "evil": _Payload()}, path)
    with pytest.raises(CheckpointError, match="unreadable"):
        ckpt.load_checkpoint(path)


class _Payload:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (print, ("executed",))


def test_resolve_resume_targets(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    older = _write(outputs / "run-a", 3)
    time.sleep(0.01)
    newest = _write(outputs / "run-b", 1)
    assert ckpt.resolve_resume("latest", outputs) == (outputs / "run-b", None)
    assert ckpt.resolve_resume("run-a", outputs) == (outputs / "run-a", None)
    assert ckpt.resolve_resume(str(outputs / "run-a"), outputs) == (outputs / "run-a", None)
    assert ckpt.resolve_resume(str(older), outputs) == (outputs / "run-a", older)
    assert ckpt.resolve_resume(str(newest.parent), outputs) == (outputs / "run-b", None)
    with pytest.raises(CheckpointError, match="neither 'latest'"):
        ckpt.resolve_resume("no-such-run", outputs)
    with pytest.raises(CheckpointError, match="no run with checkpoints"):
        ckpt.resolve_resume("latest", tmp_path / "empty")


_SLOW_WRITER = """
import sys, torch
from pathlib import Path
from visionops.training import checkpoint as ckpt
run_dir = Path(sys.argv[1])
base = {"optimizer": {}, "scheduler": {}, "rng": {}, "run_id": "r"}
first = {**base, "model": {"w": torch.ones(4)}, "progress": {"step": 1}}
ckpt.save_checkpoint(first, ckpt.checkpoint_path(run_dir, 1))
print("first saved", flush=True)
big = torch.randn(200_000_000 // 4)  # 200 MB: long enough to be killed mid-write
second = {**base, "model": {"w": big}, "progress": {"step": 2}}
ckpt.save_checkpoint(second, ckpt.checkpoint_path(run_dir, 2))
print("second saved", flush=True)
"""


@pytest.mark.integration
def test_kill_during_save_leaves_the_previous_checkpoint_loadable(tmp_path: Path) -> None:
    folder = tmp_path / ckpt.CHECKPOINT_DIR
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "first saved"
        deadline = time.monotonic() + 60
        while not list(folder.glob(".step-000000002.pt.*.tmp")):
            assert proc.poll() is None, "the writer finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)

    assert proc.returncode == -signal.SIGKILL
    assert not ckpt.checkpoint_path(tmp_path, 2).exists()
    path, state = ckpt.load_newest_valid(tmp_path)
    assert path == ckpt.checkpoint_path(tmp_path, 1)
    assert torch.equal(state["model"]["w"], torch.ones(4))
