"""The write-ahead spool of metric points: one JSON file per batch, deleted once MLflow has it.

A run keeps its spool in ``<run dir>/tracking-spool/``::

    000000042.json  {"run_id": "...", "tracking_uri": "http://...",
                     "points": [{"key": "train/step_loss", "value": 0.93,
                                 "timestamp": 1700000000000, "step": 42}, ...]}
    end.json        {"run_id": "...", "tracking_uri": "...", "status": "FINISHED"}

A batch is written (temp file, fsync, rename) before it is sent and removed only after MLflow
stored it, so at any moment every point is in MLflow, in this folder, or both. Both is harmless:
points keep the timestamps they were logged with, and MLflow stores a point once per (key,
value, timestamp, step), so sending a batch again after a lost response adds nothing.
``end.json`` is the status a run should end with, written when the server was unreachable as
the run finished; ``visionops tracking replay`` sends it after the points.

``MetricSpool(None)`` keeps batches in memory instead: runs without a run folder (evaluation
runs, library use) lose their unsent points with the process.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric

from visionops.config import split_url_credentials
from visionops.errors import VisionOpsError
from visionops.files import write_atomically

SPOOL_DIRNAME = "tracking-spool"
_END_FILE = "end.json"


class SpoolError(VisionOpsError):
    """A spool file cannot be read."""


@dataclass(frozen=True)
class SpooledBatch:
    """Metric points of one run, sent to MLflow as one ``log_batch`` call."""

    sequence: int
    run_id: str
    tracking_uri: str
    points: tuple[Metric, ...]

    def to_json(self) -> str:
        points = [
            {"key": m.key, "value": m.value, "timestamp": m.timestamp, "step": m.step}
            for m in self.points
        ]
        # NaN and infinite losses are real metric values; json writes them as NaN/Infinity.
        return json.dumps(
            {"run_id": self.run_id, "tracking_uri": _saved(self.tracking_uri), "points": points}
        )

    @classmethod
    def from_json(cls, sequence: int, text: str) -> SpooledBatch:
        data = json.loads(text)
        points = tuple(
            Metric(p["key"], float(p["value"]), int(p["timestamp"]), int(p["step"]))
            for p in data["points"]
        )
        return cls(sequence, data["run_id"], data["tracking_uri"], points)


@dataclass(frozen=True)
class PendingEnd:
    """The status a run could not be ended with because the server was unreachable."""

    run_id: str
    tracking_uri: str
    status: str


def spool_folder(run_dir: Path) -> Path:
    return run_dir / SPOOL_DIRNAME


def replay_command(folder: Path) -> str:
    """The command that sends what ``folder`` holds."""
    target = folder.parent if folder.name == SPOOL_DIRNAME else folder
    return f"visionops tracking replay {target}"


class MetricSpool:
    """Batches waiting for MLflow, oldest first; in ``folder`` or, without one, in memory.

    One process appends (the training run); any number may read and remove (its sending thread,
    ``visionops tracking replay``), which is safe because removing a batch twice is a no-op.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._memory: dict[int, SpooledBatch] = {}
        self._next_sequence = max(self._sequences(), default=-1) + 1

    def describe(self) -> str:
        return str(self.folder) if self.folder is not None else "memory (no run folder)"

    def append(self, run_id: str, tracking_uri: str, points: Sequence[Metric]) -> SpooledBatch:
        with self._lock:
            sequence = self._next_sequence
            self._next_sequence += 1
            batch = SpooledBatch(sequence, run_id, tracking_uri, tuple(points))
            if self.folder is None:
                self._memory[sequence] = batch
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(self._path(sequence), lambda f: f.write(batch.to_json().encode()))
        return batch

    def batches(self) -> Iterator[SpooledBatch]:
        """The spooled batches, oldest first, each read only when the caller gets to it."""
        for sequence in sorted(self._sequences()):
            if self.folder is None:
                with self._lock:
                    batch = self._memory.get(sequence)
                if batch is not None:
                    yield batch
                continue
            path = self._path(sequence)
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue  # another replayer sent it meanwhile
            try:
                yield SpooledBatch.from_json(sequence, text)
            except (ValueError, KeyError, TypeError) as error:
                raise SpoolError(f"cannot read spooled metric points {path}: {error}") from error

    def remove(self, batch: SpooledBatch) -> None:
        if self.folder is None:
            with self._lock:
                self._memory.pop(batch.sequence, None)
        else:
            self._path(batch.sequence).unlink(missing_ok=True)

    def is_empty(self) -> bool:
        """Nothing waits here: no batch and no run end."""
        return not self._sequences() and self.pending_end() is None

    def num_points(self) -> int:
        return sum(len(batch.points) for batch in self.batches())

    def steps_by_key(self, run_id: str) -> dict[str, set[int]]:
        """The steps each metric of ``run_id`` has in the spool."""
        steps: dict[str, set[int]] = {}
        for batch in self.batches():
            if batch.run_id == run_id:
                for point in batch.points:
                    steps.setdefault(point.key, set()).add(point.step)
        return steps

    def discard_partial_writes(self) -> None:
        """Remove temp files of a process that died while writing: their points never counted
        as logged (``flush`` had not returned), and the resumed run logs them again."""
        if self.folder is not None:
            for partial in self.folder.glob(".*.tmp"):
                partial.unlink(missing_ok=True)

    def mark_end(self, run_id: str, tracking_uri: str, status: str) -> None:
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            end = {"run_id": run_id, "tracking_uri": _saved(tracking_uri), "status": status}
            write_atomically(self.folder / _END_FILE, lambda f: f.write(json.dumps(end).encode()))

    def pending_end(self) -> PendingEnd | None:
        if self.folder is None or not (self.folder / _END_FILE).is_file():
            return None
        data: dict[str, Any] = json.loads((self.folder / _END_FILE).read_text())
        return PendingEnd(data["run_id"], data["tracking_uri"], data["status"])

    def clear_end(self) -> None:
        if self.folder is not None:
            (self.folder / _END_FILE).unlink(missing_ok=True)

    def _path(self, sequence: int) -> Path:
        assert self.folder is not None
        return self.folder / f"{sequence:09d}.json"

    def _sequences(self) -> list[int]:
        if self.folder is None:
            with self._lock:
                return list(self._memory)
        if not self.folder.is_dir():
            return []
        return [int(p.stem) for p in self.folder.glob("*.json") if p.stem.isdigit()]


def _saved(tracking_uri: str) -> str:
    """The URI as the spool files keep it: without a password (a replay logs in with the
    environment's MLflow variables, as every later command does)."""
    return split_url_credentials(tracking_uri)[0]
