"""The server over time: hot reload when the alias moves (and a broken version that must not
replace a working one), shadow traffic, and a graceful stop on SIGTERM."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from serving_support import MODEL_NAME, ServedRegistry, metric_value, png_bytes

from visionops.serving import metrics as names
from visionops.tracking.client import download_model

pytestmark = pytest.mark.integration

RELOAD_INTERVAL_S = 0.5


def _predict(url: str, png: bytes) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/predict", files=[("file", ("x.png", png, "image/png"))], timeout=60
    )


def _register_broken_version(registry: ServedRegistry, folder: Path) -> str:
    """A new version whose MLmodel is intact but whose weights are garbage."""
    model_dir = download_model(f"models:/{MODEL_NAME}/2", registry.tracking_uri, folder)
    for weights in (
        p for p in model_dir.rglob("*") if p.is_file() and p.suffix in {".pt2", ".pth"}
    ):
        weights.write_bytes(b"not a model")
    broken = folder.parent / "broken-model"
    shutil.copytree(model_dir, broken)
    version = registry.client().create_model_version(MODEL_NAME, broken.as_uri())
    return str(version.version)


def test_the_server_follows_its_alias_and_a_broken_version_leaves_the_old_one_serving(
    start_server,
    served_registry: ServedRegistry,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    served_registry.set_alias("live", 1)
    server = start_server(
        "--reload-interval-s", str(RELOAD_INTERVAL_S), model_uri=f"models:/{MODEL_NAME}@live"
    )
    images = served_registry.images[:8]
    expected = {
        version: [
            served_registry.classes[i]
            for i in served_registry.probabilities(version, images).argmax(1).tolist()
        ]
        for version in ("1", "2")
    }
    answers: list[tuple[str, int, str, int]] = []  # version, image, label, status
    stop = threading.Event()

    def keep_asking() -> None:
        index = 0
        while not stop.is_set():
            response = _predict(server.url, served_registry.pngs[index % 8])
            body = response.json() if response.status_code == 200 else {}
            prediction = body.get("predictions", [{}])[0]
            answers.append(
                (
                    prediction.get("model_version", ""),
                    index % 8,
                    prediction.get("top_k", [{}])[0].get("label", ""),
                    response.status_code,
                )
            )
            index += 1

    clients = [threading.Thread(target=keep_asking) for _ in range(3)]
    for client in clients:
        client.start()
    try:
        time.sleep(1.0)
        moved = time.monotonic()
        served_registry.set_alias("live", 2)
        deadline = moved + 60
        while time.monotonic() < deadline and not any(a[0] == "2" for a in answers[-5:]):
            time.sleep(0.1)
        switched_after = time.monotonic() - moved
        time.sleep(1.0)
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert all(status == 200 for *_, status in answers), "a request failed during the swap"
    versions = [a[0] for a in answers]
    assert versions[0] == "1" and versions[-1] == "2"
    assert switched_after < 30, switched_after  # an interval, plus loading and warming up
    for version, image, label, _ in answers:
        assert label == expected[version][image]  # each answer is the version it names

    broken = _register_broken_version(served_registry, tmp_path / "download")
    served_registry.set_alias("live", broken)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.url}/metrics").text
        if 'result="failure"' in text:
            break
        time.sleep(0.2)
    time.sleep(3 * RELOAD_INTERVAL_S)  # more polls: the broken version is not retried
    response = _predict(server.url, served_registry.pngs[0])
    assert response.status_code == 200
    assert response.json()["model"]["version"] == "2"
    text = httpx.get(f"{server.url}/metrics").text
    assert metric_value(text, names.RELOADS, role="production", result="failure") == 1
    assert metric_value(text, names.RELOADS, role="production", result="success") == 1
    assert metric_value(text, names.MODEL_INFO, version="2", role="production") == 1
    assert (
        f'{names.MODEL_INFO}{{alias="live",backend="torch",name="{MODEL_NAME}",role="production",version="1"}}'
        not in text
    )
    assert "did not load; still serving" in server.output()
    server.stop()


def test_shadow_traffic_exports_agreement_and_latency_per_version(
    start_server,
    served_registry: ServedRegistry,  # type: ignore[no-untyped-def]
) -> None:
    served_registry.set_alias("shadow", 2)
    server = start_server(
        "--shadow-alias", "shadow", "--shadow-fraction", "1", "--reload-interval-s", "0"
    )
    # Noise, on which two trainings of the model disagree now and then: the agreement is
    # measured, not assumed.
    count = 40
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 16, 16), dtype=torch.uint8, generator=generator)
    pngs = [png_bytes(image) for image in images]
    for start in range(0, count, 10):
        files = [("file", (f"{i}.png", pngs[i], "image/png")) for i in range(start, start + 10)]
        response = httpx.post(f"{server.url}/v1/predict", files=files, timeout=60)
        assert response.json()["model"]["version"] == "1"  # the shadow's answers stay unseen
    agreeing = int(
        (
            served_registry.probabilities(1, images).argmax(1)
            == served_registry.probabilities(2, images).argmax(1)
        ).sum()
    )
    assert 0 < agreeing < count

    deadline = time.monotonic() + 30
    labels = {"production_version": "1", "shadow_version": "2"}
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.url}/metrics").text
        if (
            f"{names.SHADOW_IMAGES}{{" in text
            and metric_value(text, names.SHADOW_IMAGES, **labels) == count
        ):
            break
        time.sleep(0.2)
    assert metric_value(text, names.SHADOW_IMAGES, **labels) == count
    assert metric_value(text, names.SHADOW_AGREEMENTS, **labels) == agreeing
    assert metric_value(text, names.SHADOW_LATENCY + "_count", shadow_version="2") == count // 10
    assert metric_value(text, names.MODEL_INFO, version="2", role="shadow", alias="shadow") == 1
    assert metric_value(text, names.TOP1_CONFIDENCE + "_count", version="1") == count
    server.stop()


def test_sigterm_drains_the_requests_in_flight_and_exits_0(
    start_server,
    served_registry: ServedRegistry,  # type: ignore[no-untyped-def]
) -> None:
    # Each image waits up to 1.5 s for a batch of 64 to fill: the requests are in flight when
    # the signal arrives.
    server = start_server(
        "--max-batch-size", "64", "--max-wait-ms", "1500", "--reload-interval-s", "0"
    )
    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(_predict, server.url, served_registry.pngs[i]) for i in range(4)]
        time.sleep(0.5)
        assert not any(f.done() for f in pending)
        started = time.monotonic()
        exit_code = server.stop()
        responses = [f.result() for f in pending]
    assert [r.status_code for r in responses] == [200] * 4
    assert exit_code == 0, server.output()
    assert time.monotonic() - started < 30
    assert "Application shutdown complete" in server.output()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/v2/health/live", timeout=2)


def test_worker_processes_share_the_port_and_their_metrics_add_up(
    start_server,
    served_registry: ServedRegistry,  # type: ignore[no-untyped-def]
) -> None:
    server = start_server("--workers", "2", "--threads", "1", "--reload-interval-s", "0")
    # Ready means one worker is; the other may still be loading. Each announces its model in
    # one info sample of its own (prometheus_client labels them by pid).
    deadline = time.monotonic() + 90
    while httpx.get(f"{server.url}/metrics").text.count(f"{names.MODEL_INFO}{{") < 2:
        assert time.monotonic() < deadline, "the second worker did not start"
        time.sleep(0.5)
    with ThreadPoolExecutor(4) as pool:
        responses = list(
            pool.map(lambda i: _predict(server.url, served_registry.pngs[i]), range(20))
        )
    assert [r.status_code for r in responses] == [200] * 20
    text = httpx.get(f"{server.url}/metrics").text
    assert (
        metric_value(text, names.REQUESTS, route="/v1/predict", method="POST", status="200") == 20
    )
    assert metric_value(text, names.TOP1_CONFIDENCE + "_count", version="1") == 20
    assert server.stop() == 0
