"""Graceful stop on SIGINT/SIGTERM: finish the current step, checkpoint, then stop.

A second SIGINT while stopping raises ``KeyboardInterrupt`` at once, for the impatient.
Handlers are only installed from the main thread (Ray Tune runs trials in threads) and are
restored on exit, so ``train`` leaves no process-wide trace.

The ranks of a distributed job must stop at the same step, or the others would wait for the
stopped one forever: ``stop_now`` is the one place that decides when a stop takes effect.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from visionops.training.world import World


class GracefulStop:
    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def stop_now(self, world: World, device: torch.device, synchronised: bool) -> bool:
        """Whether training stops after this step. A single process stops at once; the ranks
        of a job agree (an all-reduce) only at ``synchronised`` steps, the ones where they
        already wait for each other, so a stop costs no extra collective per step."""
        if not world.distributed:
            return self.requested
        return synchronised and world.any(self.requested, device)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
