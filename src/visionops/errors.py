"""Errors that reach users as one clear line (the CLI prints them without a traceback)."""

from __future__ import annotations


class VisionOpsError(Exception):
    """A problem the user can fix: bad input, missing data, an unusable checkpoint."""


class ConfigError(VisionOpsError):
    """A configuration value is invalid; the message names the field and what is accepted."""


class DataError(VisionOpsError):
    """A dataset is missing, unreadable or too small for the requested configuration."""


class CheckpointError(VisionOpsError):
    """No usable checkpoint exists where one was asked for."""


class TrainingInterrupted(VisionOpsError):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint."""

    def __init__(self, message: str, checkpoint: str, run_id: str | None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint
        self.run_id = run_id
