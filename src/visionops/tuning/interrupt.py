"""SIGINT and SIGTERM end a sweep the same way: Tune stops the trials and saves its state, and
the sweep is recorded as interrupted (nothing registered), to be continued with ``--resume``.

Ray Tune handles SIGINT itself while ``Tuner.fit`` runs: it stops the trials, snapshots the
experiment and *returns*, with a ResultGrid that looks like a finished sweep's except for its
unfinished trials (``results.ran_to_end`` tells them apart). SIGTERM, which the handler Ray
installs in a driver turns into an immediate exit, is handed to the SIGINT handler of the
moment instead: Tune's during ``fit``, Python's (``KeyboardInterrupt``) around it. So an
orchestrator's stop saves the sweep as Ctrl-C does.

    with ray_session(address, num_cpus), SweepSignals() as signals:
        results = tuner.fit()
    signals.received  # "SIGTERM", or None (SIGINT goes to Tune unseen)
"""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType
from typing import Any

from visionops.errors import VisionOpsError


class SweepInterrupted(VisionOpsError):
    """A signal stopped the sweep before its trials ended; it can be resumed."""

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process the signal ended: 130 for
        SIGINT, 143 for SIGTERM."""
        return 128 + signal.Signals[self.signal_name].value


class SweepSignals:
    """While entered (in the main thread), SIGTERM acts as SIGINT and is recorded."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> SweepSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._installed:
            # None: a handler set outside Python, which cannot be put back; the default is.
            signal.signal(signal.SIGTERM, self._previous or signal.SIG_DFL)
            self._installed = False

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.received = self.received or signal.Signals(signum).name
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):  # SIGINT ignored or left to the OS: stop all the same
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)
