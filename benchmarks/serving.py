"""`visionops serve` under load on loopback, side by side with batch 1 and `mlflow models serve`.

Serves one registered model three ways, one after the other in one run: `visionops serve` with
dynamic batching, `visionops serve --max-batch-size 1`, and `mlflow models serve` (the model's
image pyfunc; MLServer was tried as a fourth and does not serve it, see ``MLSERVER_NOT_RUN``).
Against each, ``--clients`` closed-loop clients (asyncio and httpx, ``_load.py``) send one
CIFAR-sized JPEG per request back to back for ``--duration-s`` after a warm-up; then the
batching server takes the same load for ``--soak-s``. Prints one JSON object: per row images/s,
p50/p95/p99 latency, errors by status, CPU (seconds per second of wall: the server's process
tree, the clients, everything else on the machine), RSS before and after, and for visionops how
its batches formed (from its /metrics); the ratios, and each goal, met or not:

- batching >= 4x the images/s of batch 1 and of `mlflow models serve`; p99 < 50 ms;
- RSS growth < 5% over the soak (after the warm-up to the end).

The clients share the server's cores. Without ``--model-uri`` it trains and registers its own
model in a temporary store: the ``cifar10-fast`` recipe's architecture and test-time
augmentation (or ``--tta``), one epoch on synthetic images (throughput does not depend on the
weights).

    python benchmarks/serving.py --images ../shared/datasets/cifar10-train-jpeg.tar.gz
    python benchmarks/serving.py --model-uri models:/cifar10-fast@production \\
        --tracking-uri sqlite:///bench.db --duration-s 5 --soak-s 0
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _load import Load, Request, cpu_shares, cpu_snapshot, drive, rss_mb, summarise
from _machine import describe_machine
from PIL import Image

MODEL_NAME = "bench-serving"
ALIAS = "bench"
READY_TIMEOUT_S = 240
STOP_TIMEOUT_S = 60
JPEG_QUALITY = 75  # CIFAR-10's JPEG copy (../shared/datasets/README.md)
GOAL_SPEEDUP = 4.0
GOAL_P99_MS = 50.0
GOAL_RSS_GROWTH_PCT = 5.0
# Tried on 2026-12-02 in a virtualenv of its own (mlserver 1.7.1, mlserver-mlflow, visionops).
MLSERVER_NOT_RUN = (
    "MLServer 1.7.1 installs, but its inference workers die at start under uvloop 0.23 (no "
    "current event loop); with parallel_workers 0 it loads the model and every request "
    "answers 500: its pandas codec cannot encode the pyfunc's probabilities column (lists)"
)


@dataclass(frozen=True)
class Row:
    name: str
    command: list[str]
    ready_path: str
    requests: list[Request]
    settings: dict[str, Any]
    prometheus: bool = False  # a visionops server: its /metrics tell how batches formed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", help="models:/NAME@ALIAS; default: train one")
    parser.add_argument("--tracking-uri", help="the store holding --model-uri")
    parser.add_argument("--images", help="a folder of JPEG/PNG or a .tar.gz; default: generated")
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--soak-s", type=float, default=300.0, help="0: no soak")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--tta", help="visionops rows; a trained model's too; default: model's")
    parser.add_argument("--threads", type=int, help="visionops serve --threads")
    parser.add_argument("--synthetic-size", type=int, default=2000)
    parser.add_argument("--rows", default="batching,batch-1,mlflow", help="comma-separated")
    args = parser.parse_args()
    if bool(args.model_uri) != bool(args.tracking_uri):
        parser.error("--model-uri and --tracking-uri go together (or neither: train a model)")

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        root = Path(tmp)
        if args.model_uri:
            model_uri, tracking_uri = args.model_uri, args.tracking_uri
            model: dict[str, Any] = {"uri": model_uri, "source": "given"}
        else:
            model_uri, tracking_uri, model = train_model(root, args.synthetic_size, args.tta)
        model["tta"] = registered_tta(model_uri, tracking_uri, root)
        images, image_source = load_images(args.images, args.num_images)
        rows = build_rows(args, model_uri, model["tta"], images)
        environment = server_environment(tracking_uri)
        results = {
            row.name: measure(row, environment, root, args.clients, args) for row in rows.values()
        }
        soak = (
            run_soak(rows["batching"], environment, root, args)
            if args.soak_s > 0 and "batching" in rows
            else None
        )
    print(
        json.dumps(
            {
                "benchmark": "serving",
                "machine": describe_machine(),
                "model": model,
                "images": {
                    "source": image_source,
                    "count": len(images),
                    "mean_bytes": round(sum(map(len, images)) / len(images)),
                },
                "load": {
                    "clients": args.clients,
                    "images_per_request": 1,
                    "warmup_s": args.warmup_s,
                    "duration_s": args.duration_s,
                    "generator": f"asyncio + httpx {httpx.__version__} (AsyncHTTPTransport, "
                    "prepared requests) in the benchmark's process, on the same cores as the "
                    "server (loopback)",
                },
                "rows": results,
                "rows_not_run": {"mlserver": MLSERVER_NOT_RUN},
                "ratios": ratios(results),
                "like_for_like": like_for_like(results),
                "goals": goals(results, soak),
                "soak": soak,
            },
            default=str,
        )
    )


# ---------------------------------------------------------------------------------------------
# The model and the images.


def train_model(
    root: Path, synthetic_size: int, tta: str | None
) -> tuple[str, str, dict[str, Any]]:
    """A registered ``cifar10-fast`` model in a temporary SQLite store, alias ``bench``."""
    from mlflow.tracking import MlflowClient

    from visionops.config import with_fields
    from visionops.recipes import get_recipe
    from visionops.training import train

    uri = f"sqlite:///{root / 'mlflow.db'}"
    values: dict[str, Any] = {"tta": tta} if tta else {}
    cfg = with_fields(
        get_recipe("cifar10-fast"),
        dataset="synthetic",
        synthetic_size=synthetic_size,
        image_size=32,
        epochs=1,
        warmup_epochs=None,
        tracking_uri=uri,
        experiment=MODEL_NAME,
        register_as=MODEL_NAME,
        output_dir=str(root / "outputs"),
        cache_dir=str(root / "cache"),
        **values,
    )
    # A SQLite store's experiments keep their artifacts in ./mlruns: the temporary folder's,
    # not the caller's.
    with contextlib.chdir(root):
        result = train(cfg)
    version = str(result.registered_version)
    MlflowClient(uri, uri).set_registered_model_alias(MODEL_NAME, ALIAS, version)
    model_uri = f"models:/{MODEL_NAME}@{ALIAS}"
    model = {
        "uri": model_uri,
        "source": f"trained here: recipe cifar10-fast ({cfg.model.name}), 1 epoch on "
        f"{synthetic_size} synthetic 32x32 images (weights irrelevant to throughput)",
        "version": result.registered_version,
    }
    return model_uri, uri, model


def registered_tta(model_uri: str, tracking_uri: str, root: Path) -> str:
    from visionops.tracking.client import download_model, model_metadata, model_tta

    return model_tta(model_metadata(download_model(model_uri, tracking_uri, root / "model")))


def load_images(source: str | None, count: int) -> tuple[list[bytes], str]:
    """``count`` encoded images: the first of a folder or a tar (never unpacked), or generated."""
    if source is None:
        return generated_jpegs(count), f"generated: smooth random 32x32, JPEG q{JPEG_QUALITY}"
    path = Path(source)
    suffixes = (".jpg", ".jpeg", ".png")
    found: list[bytes] = []
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes):
            found.append(file.read_bytes())
            if len(found) == count:
                break
    else:
        # Members are read in order from the stream; classes alternate so that a few hundred
        # images are not all from the first folder.
        per_class: dict[str, list[bytes]] = {}
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if not member.isfile() or not member.name.lower().endswith(suffixes):
                    continue
                bucket = per_class.setdefault(str(Path(member.name).parent), [])
                if len(bucket) < count:
                    extracted = archive.extractfile(member)
                    assert extracted is not None
                    bucket.append(extracted.read())
        columns = list(per_class.values())
        found = [image for group in zip(*columns, strict=False) for image in group][:count]
        if len(found) < count:  # uneven folders: zip stopped at the shortest
            found += [image for group in columns for image in group][: count - len(found)]
    if not found:
        raise SystemExit(f"--images {source}: no .jpg, .jpeg or .png files found")
    return found, f"{source} (first {len(found)})"


def generated_jpegs(count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        smooth = Image.fromarray(coarse).resize((32, 32), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        smooth.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        images.append(buffer.getvalue())
    return images


# ---------------------------------------------------------------------------------------------
# The servers.


def build_rows(
    args: argparse.Namespace, model_uri: str, model_tta: str, images: list[bytes]
) -> dict[str, Row]:
    tta = args.tta or model_tta
    visionops = [sys.executable, "-m", "visionops", "serve", "--model-uri", model_uri]
    visionops += ["--max-wait-ms", str(args.max_wait_ms), "--reload-interval-s", "0"]
    visionops += ["--tta", tta]
    if args.threads:
        visionops += ["--threads", str(args.threads)]
    multipart = [multipart_request(image) for image in images]
    mlflow = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri]
    mlflow += ["--env-manager", "local", "--host", "127.0.0.1"]
    rows = {
        "batching": Row(
            "batching",
            [*visionops, "--max-batch-size", str(args.max_batch_size)],
            "/v2/health/ready",
            multipart,
            {"max_batch_size": args.max_batch_size, "max_wait_ms": args.max_wait_ms, "tta": tta},
            prometheus=True,
        ),
        "batch-1": Row(
            "batch-1",
            [*visionops, "--max-batch-size", "1"],
            "/v2/health/ready",
            multipart,
            {"max_batch_size": 1, "tta": tta},
            prometheus=True,
        ),
        "mlflow": Row(
            "mlflow",
            mlflow,
            "/ping",
            [json_request("/invocations", dataframe_split(image)) for image in images],
            {"server": "mlflow models serve (image pyfunc)", "tta": model_tta},
        ),
    }
    unknown = set(args.rows.split(",")) - set(rows)
    if unknown:
        raise SystemExit(f"--rows: unknown {sorted(unknown)} (known: {', '.join(rows)})")
    return {name: rows[name] for name in args.rows.split(",")}


def multipart_request(image: bytes) -> Request:
    built = httpx.Request("POST", "/v1/predict", files={"file": ("image.jpg", image, "image/jpeg")})
    return Request("/v1/predict", built.read(), built.headers["content-type"])


def json_request(path: str, payload: dict[str, Any]) -> Request:
    return Request(path, json.dumps(payload).encode(), "application/json")


def dataframe_split(image: bytes) -> dict[str, Any]:
    encoded = base64.b64encode(image).decode("ascii")
    return {"dataframe_split": {"columns": ["image"], "data": [[encoded]]}}


def server_environment(tracking_uri: str) -> dict[str, str]:
    # mlflow models serve execs `uvicorn` from PATH: this environment's scripts first.
    scripts = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(
    row: Row, environment: dict[str, str], root: Path
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """A ready server for ``row`` on a free port; stopped with SIGTERM (its process group, so
    workers stop with it), killed if it has not exited after a minute. Yields its URL, its pid
    and a dict that holds the exit code once it has stopped."""
    port = free_port()
    log = root / f"{row.name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*row.command, "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=root,
            start_new_session=True,
        )
    stopped: dict[str, Any] = {}
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url + row.ready_path, process, log)
        yield url, process.pid, stopped
    finally:
        stopped["exit_code"] = stop(process)


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({process.returncode}):\n{tail(log)}")
        with suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{url} was not ready in {READY_TIMEOUT_S} s:\n{tail(log)}")


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # anything of its group that outlived it
    return int(process.returncode)


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# Measuring a row, and the soak.


def measure(
    row: Row, environment: dict[str, str], root: Path, clients: int, args: argparse.Namespace
) -> dict[str, Any]:
    with serving(row, environment, root) as (url, pid, stopped):
        rss_before = rss_mb(pid)
        asyncio.run(drive(url, row.requests, clients, args.warmup_s))
        before, counted = cpu_snapshot(pid), scrape(url) if row.prometheus else None
        load = asyncio.run(drive(url, row.requests, clients, args.duration_s))
        after = cpu_snapshot(pid)
        batches = batch_figures(counted, scrape(url), load.wall_s) if counted else None
        rss_after = rss_mb(pid)
    return {
        **summarise(load),
        **cpu_shares(before, after, load.wall_s),
        **({"batches": batches} if batches else {}),
        "rss_mb": {"before": rss_before, "after": rss_after},
        "settings": row.settings,
        "exit_code": stopped["exit_code"],
    }


def run_soak(
    row: Row, environment: dict[str, str], root: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The batching server under the same load for ``--soak-s``: RSS after the warm-up, every
    30 s, and at the end."""
    samples: list[tuple[float, float]] = []

    async def soak(url: str, pid: int) -> Load:
        async def sample() -> None:
            start = time.perf_counter()
            while True:
                samples.append((round(time.perf_counter() - start), rss_mb(pid)))
                await asyncio.sleep(30)

        sampler = asyncio.create_task(sample())
        try:
            return await drive(url, row.requests, args.clients, args.soak_s)
        finally:
            sampler.cancel()

    with serving(row, environment, root) as (url, pid, stopped):
        asyncio.run(drive(url, row.requests, args.clients, args.warmup_s))
        before = cpu_snapshot(pid)
        load = asyncio.run(soak(url, pid))
        after = cpu_snapshot(pid)
        end = rss_mb(pid)
    start = samples[0][1]
    return {
        **summarise(load),
        **cpu_shares(before, after, load.wall_s),
        "duration_s": args.soak_s,
        "rss_mb": {"after_warmup": start, "end": end, "every_30s": [mb for _, mb in samples]},
        "rss_growth_pct": round(100 * (end - start) / start, 2),
        "exit_code": stopped["exit_code"],
    }


def scrape(url: str) -> defaultdict[str, float]:
    """The ``_sum`` and ``_count`` of every histogram on a visionops server's /metrics, summed
    over their labels (the production model's only: shadow samples are left out)."""
    totals: defaultdict[str, float] = defaultdict(float)
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("#") or 'role="shadow"' in line:
            continue
        sample, _, value = line.rpartition(" ")
        metric = sample.split("{", 1)[0]
        if metric.endswith(("_sum", "_count")):
            totals[metric] += float(value)
    return totals


def batch_figures(
    before: dict[str, float], after: dict[str, float], wall_s: float
) -> dict[str, float]:
    """How the server batched during the window: images per forward pass, a pass's duration,
    the share of the wall it spent in forward passes, and an image's wait for its batch."""
    from visionops.serving.metrics import BATCH_SIZE, INFERENCE_DURATION, QUEUE_WAIT

    def delta(sample: str) -> float:
        return after.get(sample, 0.0) - before.get(sample, 0.0)

    def mean(metric: str) -> float:
        count = delta(f"{metric}_count")
        return delta(f"{metric}_sum") / count if count else 0.0

    return {
        "images_per_forward": round(mean(BATCH_SIZE), 1),
        "forward_ms": round(1000 * mean(INFERENCE_DURATION), 1),
        "forward_share_of_wall": round(delta(f"{INFERENCE_DURATION}_sum") / wall_s, 2),
        "queue_wait_ms": round(1000 * mean(QUEUE_WAIT), 1),
    }


# ---------------------------------------------------------------------------------------------
# Ratios and goals.


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    def ratio(other: str) -> float | None:
        if "batching" not in results or other not in results:
            return None
        below = results[other]["images_per_s"]
        return round(results["batching"]["images_per_s"] / below, 2) if below else None

    return {f"batching/{name}": ratio(name) for name in results if name != "batching"}


def like_for_like(results: dict[str, dict[str, Any]]) -> str:
    ttas = {name: row["settings"]["tta"] for name, row in results.items()}
    if len(set(ttas.values())) <= 1:
        return f"yes: every row applies test-time augmentation {next(iter(ttas.values()), '')}"
    return f"no: the rows apply different test-time augmentation {ttas}"


def goals(results: dict[str, dict[str, Any]], soak: dict[str, Any] | None) -> dict[str, Any]:
    found = ratios(results)
    figures: dict[str, Any] = {}
    for other in ("batch-1", "mlflow"):
        value = found.get(f"batching/{other}")
        if value is not None:
            figures[f"throughput_vs_{other}"] = {
                "goal": f">= {GOAL_SPEEDUP:g}x",
                "measured": value,
                "met": value >= GOAL_SPEEDUP,
            }
    if "batching" in results:
        p99 = results["batching"]["latency_ms"]["p99"]
        figures["p99_latency"] = {
            "goal": f"< {GOAL_P99_MS:g} ms",
            "measured": p99,
            "met": p99 < GOAL_P99_MS,
        }
    if soak is not None:
        growth = soak["rss_growth_pct"]
        figures["soak_rss_growth"] = {
            "goal": f"< {GOAL_RSS_GROWTH_PCT:g}% over {soak['duration_s']:g} s",
            "measured": growth,
            "met": growth < GOAL_RSS_GROWTH_PCT,
        }
    return figures


if __name__ == "__main__":
    main()
