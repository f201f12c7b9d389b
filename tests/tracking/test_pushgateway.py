"""``--pushgateway``: a training run's progress and outcome in a real Prometheus Pushgateway.

The gateway is Debian's ``prometheus-pushgateway`` (``scripts/install-system-packages.sh``) on
a free loopback port, with basic auth: a push that arrives proves the credentials in the URL
reached it, while the run's params, files and logs show them redacted. The unreachable and
silent gateways are a closed port and a socket that never answers.
"""

from __future__ import annotations

import base64
import logging
import math
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlsplit

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from visionops import names
from visionops.cli.commands.train import train_config
from visionops.cli.parser import build_parser
from visionops.config import TrainConfig, flatten_config, redact_url, with_fields
from visionops.errors import ConfigError
from visionops.tracking import pushgateway as pg
from visionops.training import EpochEnd, train

BINARY = shutil.which("prometheus-pushgateway")
#: A mark, not a skip in the fixture, so that no model is trained for a test that cannot run.
needs_pushgateway = pytest.mark.skipif(
    BINARY is None,
    reason="prometheus-pushgateway is not installed (scripts/install-system-packages.sh)",
)
USER, PASSWORD = "trainer", "monitoreo2021"
#: bcrypt (cost 12) of PASSWORD: what the gateway's web config holds.
PASSWORD_HASH = "$2b$12$Kvf88U2IcARZwSqI7x0JTO22i763bOvDQl/C7ZGUM2bnAvLUDrEQy"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _request(url: str, path: str, method: str = "GET", body: str | None = None) -> str:
    """``method path`` on the gateway of ``url``, authenticated by the URL's credentials."""
    parts = urlsplit(url)
    request = urllib.request.Request(
        f"http://{parts.hostname}:{parts.port}{path}",
        data=body.encode() if body is not None else None,
        method=method,
    )
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    """A running Pushgateway that wants basic auth; its URL holds the credentials."""
    assert BINARY is not None
    web_config = tmp_path / "pushgateway-web.yml"
    web_config.write_text(f"basic_auth_users:\n  {USER}: '{PASSWORD_HASH}'\n")
    port = _free_port()
    process = subprocess.Popen(
        [
            BINARY,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.config.file={web_config}",
            "--persistence.file=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                _request(url, "/-/ready")
                break
            except (URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the Pushgateway did not start: {process.communicate()[1]}")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _group(url: str, run_id: str) -> dict[str, Sample]:
    """The samples of run ``run_id``'s group, by metric name."""
    return {
        sample.name: sample
        for family in text_string_to_metric_families(_request(url, "/metrics"))
        for sample in family.samples
        if sample.labels.get(pg.GROUPING_KEY) == run_id
    }


@needs_pushgateway
def test_a_run_pushes_its_progress_and_success_without_showing_the_password(
    tiny_config: TrainConfig,
    tracking_uri: str,
    gateway: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    started = time.time()
    result = train(with_fields(tiny_config, pushgateway=gateway))
    ended = time.time()

    assert result.run_id is not None
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    # Step metrics are logged at every epoch's last step, so the last one is the step count.
    steps = max(m.step for m in client.get_metric_history(result.run_id, names.STEP_LOSS))
    group = _group(gateway, result.run_id)
    assert set(pg.METRIC_NAMES) <= set(group)
    for name in pg.METRIC_NAMES:
        labels = group[name].labels
        assert labels["job"] == pg.JOB
        assert (labels["experiment"], labels.get("sweep", "")) == ("tests", "")
    value = {name: group[name].value for name in pg.METRIC_NAMES}
    assert value[pg.EPOCH] == 2
    assert value[pg.STEP] == steps
    assert value[pg.VAL_ACCURACY] == pytest.approx(run.data.metrics[names.VAL_ACCURACY])
    assert value[pg.IMAGES_PER_SECOND] > 0 and math.isfinite(value[pg.LOSS])
    assert started <= value[pg.LAST_PROGRESS_TIMESTAMP] <= value[pg.LAST_SUCCESS_TIMESTAMP]
    assert value[pg.LAST_SUCCESS_TIMESTAMP] <= ended
    assert value[pg.LAST_FAILURE_TIMESTAMP] == 0
    assert value[pg.RUNNING] == 0
    assert not [r for r in caplog.records if r.name == pg.__name__]

    # The password reached the gateway (it wants it) and nothing else.
    assert run.data.params["tracking.pushgateway"] == redact_url(gateway)
    assert not [key for key, param in run.data.params.items() if PASSWORD in param]
    artifact = mlflow.artifacts.download_artifacts(
        run_id=result.run_id, artifact_path=names.RUN_CONFIG_ARTIFACT, tracking_uri=tracking_uri
    )
    assert PASSWORD not in Path(artifact).read_text()
    files = [path for path in result.run_dir.rglob("*") if path.is_file()]
    assert files and not [path for path in files if PASSWORD.encode() in path.read_bytes()]
    output = capfd.readouterr()
    assert PASSWORD not in caplog.text + output.out + output.err

    # The documented clean-up.
    _request(gateway, f"/metrics/job/{pg.JOB}/{pg.GROUPING_KEY}/{result.run_id}", "DELETE")
    assert _group(gateway, result.run_id) == {}


@needs_pushgateway
def test_a_failed_sweep_trial_sets_the_failure_timestamp(
    tiny_config: TrainConfig, tracking_uri: str, gateway: str
) -> None:
    client = MlflowClient(tracking_uri)
    sweep = client.create_run(
        client.create_experiment("sweeps"), tags={names.SWEEP_TAG: "s"}
    ).info.run_id
    ids: list[str | None] = []

    def fail(end: EpochEnd) -> None:
        ids.append(end.run_id)
        raise RuntimeError("the epoch callback failed")

    started = time.time()
    cfg = with_fields(tiny_config, pushgateway=gateway, parent_run_id=sweep, log_model=False)
    with pytest.raises(RuntimeError, match="callback failed"):
        train(cfg, on_epoch_end=fail)
    ended = time.time()

    assert ids[0] is not None
    group = _group(gateway, ids[0])
    assert group[pg.EPOCH].labels["sweep"] == sweep
    assert group[pg.EPOCH].value == 1
    assert started <= group[pg.LAST_FAILURE_TIMESTAMP].value <= ended
    assert group[pg.LAST_SUCCESS_TIMESTAMP].value == 0
    assert group[pg.RUNNING].value == 0


@needs_pushgateway
def test_a_stopped_trial_is_marked_ended_and_keeps_its_progress(gateway: str) -> None:
    labels = 'experiment="e",sweep="s"'
    progress = "".join(
        f"# TYPE {name} gauge\n{name}{{{labels}}} {value}\n"
        for name, value in {pg.EPOCH: 3, pg.RUNNING: 1}.items()
    )
    _request(gateway, f"/metrics/job/{pg.JOB}/{pg.GROUPING_KEY}/trial", "PUT", progress)

    pg.mark_ended(gateway, "trial", experiment="e", sweep="s")

    group = _group(gateway, "trial")
    assert (group[pg.RUNNING].value, group[pg.EPOCH].value) == (0, 3)


def test_an_unreachable_gateway_costs_a_run_one_warning(
    tiny_config: TrainConfig, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{_free_port()}"  # closed: nothing listens there
    caplog.set_level(logging.WARNING)
    result = train(with_fields(tiny_config, pushgateway=url, log_model=False))
    assert result.epochs_completed == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == pg.__name__]
    assert len(warnings) == 1 and url in warnings[0]


def test_a_gateway_that_never_answers_holds_up_no_training_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections queue up; nothing ever answers them
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        timeout = 1.0
        pusher = pg.ProgressPusher(url, "run", interval_sec=0, timeout_sec=timeout)
        began = time.monotonic()
        pusher.start(epoch=0, step=0)
        for step in range(1, 101):
            pusher.log_step(step, {names.STEP_LOSS: 1.0, names.IMAGES_PER_SEC: 10.0})
        pusher.log_epoch(1, 100, {names.VAL_ACCURACY: 0.5})
        # Pushed synchronously, each of these calls would have waited for the timeout.
        assert time.monotonic() - began < timeout / 2
        pusher.finish("FINISHED")
        # At most the push under way and the last one, each cut short by the timeout.
        assert time.monotonic() - began < 3 * timeout + 1
    warnings = [r.getMessage() for r in caplog.records if r.name == pg.__name__]
    assert len(warnings) == 1 and url in warnings[0]


def test_the_url_comes_from_the_flag_or_the_variable_and_hides_its_password() -> None:
    def resolve(argv: list[str], environ: dict[str, str]) -> TrainConfig:
        return train_config(build_parser().parse_args(["train", *argv]), environ)

    with_password = "http://ops:hunter2@gateway:9091"
    cfg = resolve(["--pushgateway", with_password], {})
    assert cfg.tracking.pushgateway == with_password
    assert flatten_config(cfg)["tracking.pushgateway"] == "http://ops:***@gateway:9091"
    assert resolve([], {"VISIONOPS_PUSHGATEWAY": "gateway:9091"}).tracking.pushgateway == (
        "http://gateway:9091"
    )
    with pytest.raises(ConfigError) as refused:
        resolve(["--pushgateway", "ftp://ops:hunter2@gateway"], {})
    assert "ftp://ops:***@gateway (from --pushgateway)" in str(refused.value)
    assert "hunter2" not in str(refused.value)
