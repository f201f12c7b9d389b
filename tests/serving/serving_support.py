"""A registry with two trained versions of one tiny model, and real `visionops serve` servers.

Versions 1 and 2 are the same architecture trained with different seeds (so they disagree on
some images), both evaluated with flip TTA; alias ``production`` starts on version 1.
``start_server`` runs `visionops serve` as its own process on a free loopback port and stops
it with SIGTERM.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image

from visionops.config import TrainConfig, with_fields

MODEL_NAME = "served-clf"
#: The models' test-time augmentation: not the default, so serving that ignored it would differ.
TTA = "flip"
READY_TIMEOUT_S = 120


@dataclass
class ServedRegistry:
    tracking_uri: str
    config: TrainConfig  # version 1's
    classes: tuple[str, ...]
    images: torch.Tensor  # validation images, uint8 (N, C, H, W)
    labels: torch.Tensor
    root: Path
    pngs: list[bytes] = field(default_factory=list)

    def client(self):  # type: ignore[no-untyped-def]
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri, self.tracking_uri)

    def set_alias(self, alias: str, version: int | str) -> None:
        self.client().set_registered_model_alias(MODEL_NAME, alias, str(version))

    def probabilities(self, version: int | str, images: torch.Tensor) -> torch.Tensor:
        """What version ``version`` answers for ``images``, computed without the server."""
        from visionops.serving.model import load_version

        return load_version(MODEL_NAME, str(version), self.tracking_uri).probabilities(images)


def png_bytes(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def _train(root: Path, seed: int, uri: str) -> TrainConfig:
    from visionops.recipes import get_recipe
    from visionops.training import train

    cfg = with_fields(
        get_recipe("debug"),
        epochs=3,
        synthetic_size=1200,
        image_size=16,
        batch_size=64,
        width_multiplier=0.25,
        lr=0.1,
        warmup_epochs=None,
        seed=seed,
        tta=TTA,
        tracking_uri=uri,
        experiment="serving-tests",
        output_dir=str(root / f"outputs-{seed}"),
        cache_dir=str(root / "cache"),
        register_as=MODEL_NAME,
    )
    train(cfg)
    return cfg


@pytest.fixture(scope="session")
def served_registry(
    new_tracking_store: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> ServedRegistry:
    from visionops.data import build_data

    root = tmp_path_factory.mktemp("serving-registry")
    uri = new_tracking_store(root, "mlflow.db")
    config = _train(root, 0, uri)
    _train(root, 1, uri)
    data = build_data(config.data, config.seed)
    tensors = data.tensors("val")
    assert tensors is not None
    images, labels = tensors
    registry = ServedRegistry(uri, config, tuple(data.classes), images, labels, root)
    registry.pngs = [png_bytes(image) for image in images]
    registry.set_alias("production", 1)
    return registry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        """SIGTERM, then the exit code (killed after 60 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_ready(server: RunningServer, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"the server exited ({server.process.returncode}):\n{server.output()}"
            )
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    server.stop()
    raise AssertionError(f"the server was not ready in {timeout_s} s:\n{server.output()}")


StartServer = Callable[..., RunningServer]


@pytest.fixture(scope="session")
def start_server(
    served_registry: ServedRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartServer]:
    """``start_server("--max-batch-size", "8", model_uri=...)``: a ready server; every one
    still running is stopped at the end of the session."""
    started: list[RunningServer] = []

    def start(
        *flags: str, model_uri: str = f"models:/{MODEL_NAME}@production", wait: bool = True
    ) -> RunningServer:
        port = free_port()
        log = tmp_path_factory.mktemp("serve-log") / "server.log"
        environment = {**os.environ, "MLFLOW_TRACKING_URI": served_registry.tracking_uri}
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "visionops",
                    "serve",
                    "--model-uri",
                    model_uri,
                    "--port",
                    str(port),
                    *flags,
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=environment,
            )
        server = RunningServer(f"http://127.0.0.1:{port}", process, log)
        started.append(server)
        if wait:
            wait_ready(server)
        return server

    yield start
    for server in started:
        server.stop()


@contextmanager
def running(start: StartServer, *flags: str, **kwargs: str) -> Iterator[RunningServer]:
    server = start(*flags, **kwargs)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def serve_url(start_server: StartServer) -> str:
    """A server on ``production`` (version 1) for the whole session; tests must not move
    its alias (the hot-reload tests use aliases of their own)."""
    return start_server("--reload-interval-s", "0").url


@pytest.fixture(scope="session")
def class_images(served_registry: ServedRegistry) -> dict[str, bytes]:
    """PNG bytes of one validation image per class that version 1 predicts right, keyed by
    that class's label."""
    predicted = served_registry.probabilities(1, served_registry.images).argmax(1)
    chosen: dict[str, bytes] = {}
    for index, (guess, truth) in enumerate(
        zip(predicted.tolist(), served_registry.labels.tolist(), strict=True)
    ):
        label = served_registry.classes[truth]
        if guess == truth and label not in chosen:
            chosen[label] = served_registry.pngs[index]
    assert chosen, "version 1 predicts no validation image right"
    return chosen


def metric_value(text: str, metric: str, **labels: str) -> float:
    """The value of the one sample of ``metric`` whose labels include ``labels``."""
    values = []
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != metric:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            values.append(float(match.group(3)))
    assert len(values) == 1, f"{metric}{labels}: {values}"
    return values[0]
