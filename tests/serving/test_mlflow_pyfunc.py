"""The image pyfunc of a logged model: ``mlflow.pyfunc.load_model`` and a real ``mlflow models
serve`` answer base64 images with the labels and probabilities ``visionops evaluate`` computes."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from serving_support import MODEL_NAME, TTA, ServedRegistry, free_port

from visionops import names
from visionops.serving.predictor import class_probabilities
from visionops.tracking.client import download_model
from visionops.tracking.model_logging import load_pytorch_model

_READY_TIMEOUT_S = 90
_IMAGES = 8


@dataclass
class Registered:
    tracking_uri: str
    classes: tuple[str, ...]
    images: torch.Tensor  # validation images, uint8
    encoded: list[str]  # base64 PNGs of them


@pytest.fixture(scope="module")
def registered(served_registry: ServedRegistry) -> Registered:
    """Version 1 of the serving tests' model (trained with TTA ``flip``, so a pyfunc that
    ignored the model's TTA would answer otherwise)."""
    encoded = [base64.b64encode(png).decode("ascii") for png in served_registry.pngs[:_IMAGES]]
    return Registered(
        served_registry.tracking_uri,
        served_registry.classes,
        served_registry.images[:_IMAGES],
        encoded,
    )


def _expected(registered: Registered, tmp_path: Path, tta: str = TTA) -> torch.Tensor:
    """What the pt2 program gives for the same images, as evaluation computes it."""
    model_dir = download_model(f"models:/{MODEL_NAME}/1", registered.tracking_uri, tmp_path / "pt2")
    return class_probabilities(load_pytorch_model(str(model_dir)), registered.images, tta)


def _labels(registered: Registered, probabilities: torch.Tensor) -> list[str]:
    return [registered.classes[index] for index in probabilities.argmax(1).tolist()]


def test_load_model_answers_base64_images_as_evaluation_does(
    registered: Registered, tmp_path: Path
) -> None:
    # Downloaded with the store's URI: an earlier test may have set MLflow's process-wide one.
    local = download_model(f"models:/{MODEL_NAME}/1", registered.tracking_uri, tmp_path / "dl")
    model = mlflow.pyfunc.load_model(str(local))
    answer = model.predict(pd.DataFrame({names.PYFUNC_IMAGE_COLUMN: registered.encoded}))

    expected = _expected(registered, tmp_path)
    assert list(answer.columns) == [
        names.PYFUNC_LABEL_COLUMN,
        names.PYFUNC_PROBABILITY_COLUMN,
        names.PYFUNC_PROBABILITIES_COLUMN,
    ]
    assert answer[names.PYFUNC_LABEL_COLUMN].tolist() == _labels(registered, expected)
    assert set(answer[names.PYFUNC_LABEL_COLUMN]) <= set(registered.classes)
    probabilities = torch.tensor(
        answer[names.PYFUNC_PROBABILITIES_COLUMN].tolist(), dtype=torch.float64
    )
    torch.testing.assert_close(probabilities, expected.double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        torch.tensor(answer[names.PYFUNC_PROBABILITY_COLUMN].tolist(), dtype=torch.float64),
        expected.max(1).values.double(),
        rtol=0,
        atol=1e-6,
    )
    # The model's TTA is applied: without it the probabilities differ.
    assert not torch.allclose(probabilities.float(), _expected(registered, tmp_path, "none"))

    # A dict of the column answers the same; text that is not a base64 image is refused.
    one = model.predict({names.PYFUNC_IMAGE_COLUMN: registered.encoded[:1]})
    assert one[names.PYFUNC_LABEL_COLUMN].tolist() == _labels(registered, expected)[:1]
    for bad in ("not base64!", base64.b64encode(b"GIF89a not an image").decode()):
        with pytest.raises(MlflowException, match="image 0"):
            model.predict(pd.DataFrame({names.PYFUNC_IMAGE_COLUMN: [bad]}))


@pytest.mark.integration
def test_mlflow_models_serve_answers_an_image_request(
    registered: Registered, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    # mlflow's CLI next to this interpreter: the environment that has visionops installed.
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        f"models:/{MODEL_NAME}@production",
    ]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    # It execs `uvicorn` from PATH: the environment's scripts first, as when it is activated.
    scripts = str(Path(sys.executable).parent)
    environment = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registered.tracking_uri,
        "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]),
    }
    with log.open("wb") as sink:
        server = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=tmp_path,
            start_new_session=True,  # its own process group: the workers stop with it
        )
    try:
        _wait_for_ping(url, server, log)
        response = httpx.post(
            f"{url}/invocations",
            json={
                "dataframe_split": {
                    "columns": [names.PYFUNC_IMAGE_COLUMN],
                    "data": [[text] for text in registered.encoded],
                }
            },
            timeout=60,
        )
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        expected = _expected(registered, tmp_path)
        assert [p[names.PYFUNC_LABEL_COLUMN] for p in predictions] == _labels(registered, expected)
        for prediction, row in zip(predictions, expected, strict=True):
            assert prediction[names.PYFUNC_PROBABILITY_COLUMN] == pytest.approx(
                float(row.max()), abs=1e-6
            )
            assert len(prediction[names.PYFUNC_PROBABILITIES_COLUMN]) == len(registered.classes)

        refused = httpx.post(
            f"{url}/invocations",
            json={"dataframe_split": {"columns": ["image"], "data": [["not base64!"]]}},
            timeout=60,
        )
        assert refused.status_code == 400, refused.text
    finally:
        _stop(server)


def _wait_for_ping(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited ({server.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(
        f"mlflow models serve did not answer /ping in {_READY_TIMEOUT_S} s:\n{log.read_text()}"
    )


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
