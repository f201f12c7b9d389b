"""Ends every process of a local Ray once the driver that started it is gone, even after
``kill -9``.

``ray.init()`` without an address starts Ray's processes under the driver. Its GCS and raylet
die with the driver (Ray asks the kernel to kill them when their parent dies), but the
raylet's own children, ``DashboardAgent`` and ``RuntimeEnvAgent``, only notice the raylet's
death and then wait for the dead GCS to take their error report: a killed driver left them
running, and holding their ports, for over a minute. Nothing in the driver runs after a
``kill -9``, so this reaper runs beside it, in a session of its own (a signal to the driver's
process group does not reach it). It is given the processes ``ray.init`` started (the driver's
other children are none of its business), notes them and their descendants every ``POLL_S``
seconds and, once the driver closes the pipe on its stdin or dies, kills those still alive.

``ray_session`` starts it for a local Ray; by hand, for a look::

    python -m visionops.distributed.reaper DRIVER_PID RAY_PROCESS_PID...
"""

from __future__ import annotations

import os
import select
import signal
import sys
from contextlib import suppress

import psutil

#: Seconds between two looks at Ray's processes (Ray starts its agents once, at start).
POLL_S = 0.5


def watch(driver_pid: int, root_pids: list[int], poll_s: float = POLL_S) -> dict[int, float]:
    """Note ``root_pids`` and their descendants until stdin reaches end-of-file or the driver
    dies.

    Returns:
        The processes seen, by pid, with their start times (a pid alone may be reused).
    """
    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return {}
    seen: dict[int, float] = {}
    while True:
        seen.update(_descendants(root_pids, seen))
        readable, _, _ = select.select([sys.stdin.buffer], [], [], poll_s)
        if readable and not os.read(sys.stdin.fileno(), 1024):
            return seen  # the driver closed the pipe (or died, which closes it too)
        if not driver.is_running():
            return seen


def _descendants(root_pids: list[int], seen: dict[int, float]) -> dict[int, float]:
    """The roots that still run and their descendants, by pid, with their start times, from one
    look at the process table (a process whose parent has died is in ``seen`` already)."""
    children: dict[int, list[int]] = {}
    started: dict[int, float] = {}
    for process in psutil.process_iter(["ppid", "create_time"]):
        children.setdefault(process.info["ppid"], []).append(process.pid)
        started[process.pid] = process.info["create_time"]
    found: dict[int, float] = {}
    # A root's pid taken over by another process (another start time) is not Ray's any more.
    pending = [p for p in root_pids if p in started and seen.get(p, started[p]) == started[p]]
    while pending:
        pid = pending.pop()
        if pid in started and pid not in found:
            found[pid] = started[pid]
            pending.extend(children.get(pid, []))
    return found


def kill_remaining(seen: dict[int, float]) -> list[int]:
    """SIGKILL the processes of ``seen`` that still run (the same process: same start time).

    Returns:
        The pids killed.
    """
    killed = []
    for pid, started in seen.items():
        with suppress(psutil.Error):
            process = psutil.Process(pid)
            if process.create_time() == started:
                process.send_signal(signal.SIGKILL)
                killed.append(pid)
    return killed


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not all(arg.isdigit() for arg in argv):
        raise SystemExit(
            f"usage: python -m visionops.distributed.reaper DRIVER_PID RAY_PROCESS_PID... "
            f"(got {' '.join(argv) or 'nothing'})"
        )
    driver, *roots = (int(arg) for arg in argv)
    kill_remaining(watch(driver, roots))


if __name__ == "__main__":
    main(sys.argv[1:])
