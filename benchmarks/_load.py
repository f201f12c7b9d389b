"""The load of ``benchmarks/serving.py``: closed-loop HTTP clients on asyncio and httpx, and
the CPU and memory of a server's process tree while they run.

    load = asyncio.run(drive("http://127.0.0.1:8080", requests, clients=32, duration_s=30))
    summarise(load)  # requests, images/s, p50/p95/p99 latency (ms), errors by status
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import psutil


@dataclass(frozen=True)
class Request:
    """One prepared request body: the clients replay it, so none is encoded under load."""

    path: str
    body: bytes
    content_type: str


def tree(pid: int) -> list[psutil.Process]:
    parent = psutil.Process(pid)
    return [parent, *parent.children(recursive=True)]


def cpu_seconds(pid: int) -> dict[int, float]:
    seconds = {}
    for process in tree(pid):
        with suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
    return seconds


def rss_mb(pid: int) -> float:
    total = 0
    for process in tree(pid):
        with suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return round(total / 2**20, 1)


@dataclass
class Load:
    latencies_ms: list[float]
    statuses: Counter[str]
    wall_s: float


async def drive(url: str, requests: Sequence[Request], clients: int, duration_s: float) -> Load:
    """``clients`` clients, each sending requests back to back until ``duration_s`` is up.

    They send prepared requests through httpx's connection pool (``AsyncHTTPTransport``, what
    ``AsyncClient`` sends through) without the client's per-request work (URL merging,
    cookies, auth, redirects): 1.2-1.9 ms of CPU a request on ``cpu-2`` against 2.9 ms through
    ``AsyncClient.post``, on cores the server shares.
    """
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    timeout = httpx.Timeout(60).as_dict()
    prepared = [
        httpx.Request(
            "POST",
            url + request.path,
            content=request.body,
            headers={"content-type": request.content_type},
            extensions={"timeout": timeout},
        )
        for request in requests
    ]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncHTTPTransport(limits=limits) as transport:
        start = time.perf_counter()
        deadline = start + duration_s

        async def one_client(offset: int) -> None:
            index = offset
            while time.perf_counter() < deadline:
                request = prepared[index % len(prepared)]
                index += clients
                sent = time.perf_counter()
                try:
                    response = await transport.handle_async_request(request)
                    await response.aread()
                    await response.aclose()
                    status = str(response.status_code)
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                latencies.append(1000 * (time.perf_counter() - sent))
                statuses[status] += 1

        await asyncio.gather(*(one_client(i) for i in range(clients)))
        return Load(latencies, statuses, time.perf_counter() - start)


def summarise(load: Load) -> dict[str, Any]:
    ok = load.statuses.get("200", 0)
    quantiles = np.percentile(load.latencies_ms, [50, 95, 99]) if load.latencies_ms else [0.0] * 3
    return {
        "requests": len(load.latencies_ms),
        "images_per_s": round(ok / load.wall_s, 1),
        "latency_ms": {
            name: round(float(value), 1)
            for name, value in zip(("p50", "p95", "p99"), quantiles, strict=True)
        },
        "errors": {s: n for s, n in load.statuses.items() if s != "200"},
    }


@dataclass
class CpuSnapshot:
    server: dict[int, float]  # pid -> seconds
    client: float
    machine_busy: float
    machine_steal: float


def cpu_snapshot(pid: int) -> CpuSnapshot:
    own = psutil.Process().cpu_times()
    machine = psutil.cpu_times()
    # Linux counts guest time inside user time; steal is time the hypervisor gave elsewhere.
    busy = sum(getattr(machine, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))
    steal = getattr(machine, "steal", 0.0)
    return CpuSnapshot(cpu_seconds(pid), own.user + own.system, busy, steal)


def cpu_shares(before: CpuSnapshot, after: CpuSnapshot, wall_s: float) -> dict[str, float]:
    """Seconds of CPU per second of wall: the server's tree, the clients (this process),
    everything else on the machine (other work on the shared cores), and the hypervisor's
    steal."""
    server = sum(seconds - before.server.get(p, 0.0) for p, seconds in after.server.items())
    client = after.client - before.client
    other = max(0.0, after.machine_busy - before.machine_busy - server - client)
    return {
        "server_cpu_per_s": round(server / wall_s, 2),
        "client_cpu_per_s": round(client / wall_s, 2),
        "other_cpu_per_s": round(other / wall_s, 2),
        "steal_cpu_per_s": round((after.machine_steal - before.machine_steal) / wall_s, 2),
    }
