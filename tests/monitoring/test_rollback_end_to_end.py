"""The whole loop with real processes: serve, Prometheus, Alertmanager, the receiver, MLflow.

`visionops serve` follows ``production`` of a registered model whose version 2 fails on part of
the traffic (every batch holding a bright image raises inside the exported program) and whose
version 1 is healthy. A load loop in the test sends bright and dark images in turn. Debian's
Prometheus scrapes the server every second and evaluates deploy/monitoring/rules/serving.yml,
copied with short waits (the expressions as they are); its alert goes to Debian's Alertmanager,
which posts to `visionops alerts receive`; the alias goes back to version 1, the server reloads
it, and the errors stop. Each step is asserted, in order, within a couple of minutes.

The two versions are tiny untrained networks logged through visionops' own model logging (no
training needed: only which version answers, and whether it fails, matters here).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from torch import nn

from visionops import names
from visionops.registry.promotion import promote
from visionops.tracking.model_logging import encode_pngs, log_model

ROOT = Path(__file__).resolve().parents[2]
SERVING_RULES = ROOT / "deploy" / "monitoring" / "rules" / "serving.yml"
MODEL_NAME = "monitored-clf"
CLASSES = ("a", "b", "c")
IMAGE_SHAPE = (3, 16, 16)
TOKEN = "end-to-end-token-5f3c9a"
ALERT = "ServingErrorRateHigh"
#: Every step is a wait for something another process does; the whole test stays well inside.
STEP_TIMEOUT_S = 90

PROMETHEUS = shutil.which("prometheus")
ALERTMANAGER = shutil.which("prometheus-alertmanager")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        PROMETHEUS is None or ALERTMANAGER is None,
        reason="needs Debian's prometheus and prometheus-alertmanager: run "
        "scripts/install-system-packages.sh",
    ),
]


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(4, len(CLASSES))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).flatten(1))


class FailsOnBrightImages(TinyNet):
    """A broken release: a batch with any image brighter than mid-grey fails. The check is a
    data-dependent assertion that ``torch.export`` keeps in the program, so the logged model
    itself fails (no test code runs in the server)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        all_dark = (images.flatten(1).mean(1) <= 0.5).all()
        torch._check(all_dark.item(), lambda: "a bright image")
        return super().forward(images)


@dataclass
class Process:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> None:
        code = self.process.poll()
        assert code is None, f"{self.name} exited ({code}):\n{self.output()}"


@contextmanager
def started(name: str, command: list[str], folder: Path, **env: str) -> Iterator[Process]:
    """``command`` as a process of its own, stopped with SIGTERM (then killed) at the end."""
    log = folder / f"{name}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},  # logs as they happen
            cwd=folder,
        )
    try:
        yield Process(name, process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_for(what: str, check: Callable[[], Any], *processes: Process) -> Any:
    """Poll ``check`` until it returns something truthy; fails naming ``what`` (with the logs of
    ``processes``) after STEP_TIMEOUT_S or as soon as one of them exits."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while time.monotonic() < deadline:
        for process in processes:
            process.alive()
        try:
            result = check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        time.sleep(0.5)
    logs = "\n".join(f"--- {p.name}\n{p.output()[-3000:]}" for p in processes)
    raise AssertionError(f"timed out after {STEP_TIMEOUT_S} s waiting for {what}\n{logs}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def register_versions(uri: str) -> None:
    """Version 1 healthy, version 2 failing on bright images; ``production`` went 1 -> 2."""
    client = MlflowClient(uri)
    experiment = client.create_experiment("monitored")
    example = torch.rand(4, *IMAGE_SHAPE) * 0.5  # dark: export must trace the passing path
    for model in (TinyNet(), FailsOnBrightImages()):
        torch.manual_seed(0)
        run = client.create_run(experiment)
        log_model(model, example, MODEL_NAME, run.info.run_id, uri, classes=CLASSES, tta="none")
        client.set_terminated(run.info.run_id)
    for version in ("1", "2"):
        assert promote(MODEL_NAME, version, names.PRODUCTION_ALIAS, force=True, tracking_uri=uri)


def write_monitoring_configs(folder: Path, serve: str, alertmanager: str, receiver: str) -> Path:
    """Prometheus and Alertmanager configs for this test's ports; the serving rules of
    deploy/monitoring with every ``for:`` cut to 2 s."""
    rules = yaml.safe_load(SERVING_RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = "2s"
    (folder / "serving.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (folder / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": ["serving.yml"],
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
                "scrape_configs": [
                    {"job_name": "visionops_serving", "static_configs": [{"targets": [serve]}]}
                ],
            }
        )
    )
    (folder / "alerts_token").write_text(TOKEN)
    webhook = {
        "url": f"http://{receiver}/alerts",
        "send_resolved": True,
        "http_config": {"authorization": {"type": "Bearer", "credentials_file": "alerts_token"}},
    }
    (folder / "alertmanager.yml").write_text(
        yaml.safe_dump(
            {
                "route": {
                    "receiver": "visionops-rollback",
                    "group_by": ["alertname", "model_name", "model_version"],
                    "group_wait": "0s",
                    "group_interval": "1s",
                    "repeat_interval": "1m",
                },
                "receivers": [{"name": "visionops-rollback", "webhook_configs": [webhook]}],
            }
        )
    )
    return folder


@dataclass
class LoadLoop:
    """One client sending a bright and a dark image in turn, recording (status, version)."""

    url: str
    images: list[bytes]
    answers: list[tuple[int, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            sent = 0
            while not self.stop.is_set():
                image = self.images[sent % len(self.images)]
                sent += 1
                try:
                    response = client.post(
                        f"{self.url}/v1/predict", files=[("file", ("x.png", image, "image/png"))]
                    )
                except httpx.TransportError:
                    self.answers.append((0, None))
                    continue
                version = (
                    response.json()["predictions"][0]["model_version"]
                    if response.is_success
                    else None
                )
                self.answers.append((response.status_code, version))
                time.sleep(0.05)

    def since(self, start: int) -> list[tuple[int, str | None]]:
        return self.answers[start:]


def samples(text: str, metric: str) -> list[tuple[dict[str, str], float]]:
    """The samples of ``visionops_serving_<metric>`` in a /metrics text: (labels, value)."""
    name = f"visionops_serving_{metric}"
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def _firing(prometheus: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]


def _in_alertmanager(alertmanager: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
    return [a for a in alerts if a["labels"]["alertname"] == ALERT]


def test_a_failing_production_version_is_rolled_back_by_its_alert(
    new_tracking_store: Callable[..., str], tmp_path: Path
) -> None:
    uri = new_tracking_store(tmp_path, "mlflow.db")
    register_versions(uri)
    client = MlflowClient(uri)
    ports = {name: free_port() for name in ("serve", "receiver", "alertmanager", "prometheus")}
    address = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    url = {name: f"http://{a}" for name, a in address.items()}
    configs = write_monitoring_configs(
        tmp_path, address["serve"], address["alertmanager"], address["receiver"]
    )
    visionops = [sys.executable, "-m", "visionops"]
    dark, bright = torch.full((1, *IMAGE_SHAPE), 0.2), torch.full((1, *IMAGE_SHAPE), 0.9)
    images = [base64.b64decode(png) for png in encode_pngs(torch.cat([bright, dark]))]

    serve_flags = f"--port {ports['serve']} --reload-interval-s 1"
    receiver_flags = f"--port {ports['receiver']} --tracking-uri {uri}"
    alertmanager_flags = (
        f"--config.file={configs / 'alertmanager.yml'} --cluster.listen-address= "
        f"--web.listen-address={address['alertmanager']} --storage.path={tmp_path / 'am-data'}"
    )
    prometheus_flags = (
        f"--config.file={configs / 'prometheus.yml'} --web.listen-address="
        f"{address['prometheus']} --storage.tsdb.path={tmp_path / 'prometheus-data'}"
    )
    with ExitStack() as stack:
        run = stack.enter_context
        serve = run(
            started(
                "serve",
                [
                    *visionops,
                    "serve",
                    "--model-uri",
                    f"models:/{MODEL_NAME}@production",
                    *serve_flags.split(),
                ],
                tmp_path,
                MLFLOW_TRACKING_URI=uri,
            )
        )
        receiver = run(
            started(
                "receiver",
                [*visionops, "alerts", "receive", *receiver_flags.split()],
                tmp_path,
                VISIONOPS_ALERTS_TOKEN=TOKEN,
            )
        )
        alertmanager = run(
            started("alertmanager", [str(ALERTMANAGER), *alertmanager_flags.split()], tmp_path)
        )
        prometheus = run(
            started("prometheus", [str(PROMETHEUS), *prometheus_flags.split()], tmp_path)
        )
        everything = (serve, receiver, alertmanager, prometheus)
        wait_for(
            "the server to be ready",
            lambda: httpx.get(f"{url['serve']}/v2/health/ready", timeout=2).is_success,
            serve,
        )
        wait_for("the receiver", lambda: httpx.get(f"{url['receiver']}/healthz").is_success)

        load = LoadLoop(url["serve"], images)
        loop = threading.Thread(target=load.run, daemon=True)
        loop.start()
        stack.callback(loop.join, 15)
        stack.callback(load.stop.set)

        # 1. Version 2 serves, and fails on the bright half of the traffic.
        wait_for("5xx answers from version 2", lambda: any(s >= 500 for s, _ in load.answers))
        assert {v for s, v in load.answers if s == 200} == {"2"}

        # 2. Prometheus sees the error rate and fires, blaming production's version 2.
        firing = wait_for("Prometheus to fire " + ALERT, lambda: _firing(url["prometheus"]))
        labels = firing[0]["labels"]
        assert labels["action"] == "rollback"
        assert (labels["model_name"], labels["model_version"]) == (MODEL_NAME, "2")
        assert labels["model_alias"] == "production"

        # 3. Alertmanager has it and posts it to the receiver, which rolls production back.
        wait_for("the alert in Alertmanager", lambda: _in_alertmanager(url["alertmanager"]))
        wait_for(
            "production to go back to version 1",
            lambda: str(client.get_registered_model(MODEL_NAME).aliases["production"]) == "1",
            *everything,
        )
        # The receiver tags the version with the alert once the alias has moved.
        alert_name_tag = names.rollback_tag("production", names.ROLLBACK_ALERT_NAME_FIELD)
        wait_for(
            "the alert's tags on version 2",
            lambda: alert_name_tag in client.get_model_version(MODEL_NAME, "2").tags,
            *everything,
        )
        tags = client.get_model_version(MODEL_NAME, "2").tags
        assert tags[alert_name_tag] == ALERT
        assert tags[names.rollback_tag("production", "replaced_by")] == "1"
        assert "rolled_back" in receiver.output()

        # 4. The server reloads version 1, and from then on every request succeeds.
        switched = wait_for(
            "the server to answer with version 1",
            lambda: next((i for i, (_, v) in enumerate(load.answers) if v == "1"), None),
            serve,
        )
        wait_for("20 answers from version 1", lambda: len(load.since(switched)) >= 20)
        after = load.since(switched)
        assert all(status == 200 and version == "1" for status, version in after), after
        metrics = httpx.get(f"{url['serve']}/metrics").text
        served = [labels["version"] for labels, _ in samples(metrics, "model_info")]
        assert served == ["1"], metrics
        counted = {
            (labels["version"], labels["outcome"])
            for labels, value in samples(metrics, "predictions_total")
            if value > 0
        }
        assert counted == {("2", "ok"), ("2", "error"), ("1", "ok")}  # no error of version 1
