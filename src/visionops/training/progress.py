"""Training progress: a rich live display on a terminal, plain log lines elsewhere.

``VISIONOPS_PROGRESS=rich|plain|off`` overrides the choice.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Protocol

from visionops import env

logger = logging.getLogger("visionops.train")


class ProgressReporter(Protocol):
    def start_epoch(self, epoch: int, first_step: int) -> None: ...
    def update(self, step_in_epoch: int, metrics: Mapping[str, float], log_line: bool) -> None: ...
    def end_epoch(self, epoch: int, summary: Mapping[str, float]) -> None: ...
    def __enter__(self) -> ProgressReporter: ...
    def __exit__(self, *exc: object) -> None: ...


def create_progress(epochs: int, steps_per_epoch: int, shown: bool = True) -> ProgressReporter:
    """The reporter ``VISIONOPS_PROGRESS`` asks for; a silent one unless ``shown`` (the other
    ranks of a distributed job, whose rank 0 reports for the job)."""
    style = env.PROGRESS.get() or ("rich" if sys.stderr.isatty() else "plain")
    if not shown:
        style = "off"
    if style == "rich":
        return RichProgress(epochs, steps_per_epoch)
    if style == "off":
        return PlainProgress(epochs, steps_per_epoch, quiet=True)
    return PlainProgress(epochs, steps_per_epoch)


def _format(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{key}={value:.4g}" for key, value in metrics.items())


class PlainProgress:
    """One log line every ``log_every_n_steps`` steps and one per epoch."""

    def __init__(self, epochs: int, steps_per_epoch: int, quiet: bool = False) -> None:
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.quiet = quiet
        self.epoch = 0

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start_epoch(self, epoch: int, first_step: int) -> None:
        self.epoch = epoch

    def update(self, step_in_epoch: int, metrics: Mapping[str, float], log_line: bool) -> None:
        if log_line and not self.quiet:
            logger.info(
                "epoch %d/%d step %d/%d %s",
                self.epoch + 1,
                self.epochs,
                step_in_epoch,
                self.steps_per_epoch,
                _format(metrics),
            )

    def end_epoch(self, epoch: int, summary: Mapping[str, float]) -> None:
        if not self.quiet:
            logger.info("epoch %d/%d done %s", epoch + 1, self.epochs, _format(summary))


class RichProgress:
    """Two bars (epochs, batches of the current epoch) with loss, accuracy and img/s."""

    def __init__(self, epochs: int, steps_per_epoch: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
        )
        self.epochs_task = self.progress.add_task("epochs", total=epochs, stats="")
        self.steps_task = self.progress.add_task("epoch 1", total=steps_per_epoch, stats="")

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_epoch(self, epoch: int, first_step: int) -> None:
        self.progress.update(self.epochs_task, completed=epoch)
        self.progress.reset(
            self.steps_task, completed=first_step, description=f"epoch {epoch + 1}", stats=""
        )

    def update(self, step_in_epoch: int, metrics: Mapping[str, float], log_line: bool) -> None:
        self.progress.update(self.steps_task, completed=step_in_epoch, stats=_format(metrics))

    def end_epoch(self, epoch: int, summary: Mapping[str, float]) -> None:
        self.progress.update(self.epochs_task, completed=epoch + 1, stats=_format(summary))
        self.console.log(f"epoch {epoch + 1} {_format(summary)}")
