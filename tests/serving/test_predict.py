"""`POST /v1/predict` on a real server: answers per image in request order, equal to
`visionops evaluate`'s, batched across concurrent clients; and what /metrics then shows."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from serving_support import MODEL_NAME, ServedRegistry, metric_value

from visionops.serving import metrics as names

pytestmark = pytest.mark.integration


def _files(pngs: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"img{i}.png", png, "image/png")) for i, png in enumerate(pngs)]


def _top1(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [p["top_k"][0]["label"] for p in response.json()["predictions"]]


def test_multipart_and_json_answer_each_image_in_request_order(
    serve_url: str, served_registry: ServedRegistry
) -> None:
    pngs = served_registry.pngs[:6]
    expected = served_registry.probabilities(1, served_registry.images[:6])
    labels = [served_registry.classes[i] for i in expected.argmax(1).tolist()]

    multipart = httpx.post(f"{serve_url}/v1/predict?top_k=3", files=_files(pngs), timeout=30)
    body = multipart.json()
    assert body["model"] == {
        "name": MODEL_NAME,
        "version": "1",
        "alias": "production",
        "backend": "torch",
    }
    assert [p["filename"] for p in body["predictions"]] == [f"img{i}.png" for i in range(6)]
    assert _top1(multipart) == labels
    for prediction, row in zip(body["predictions"], expected, strict=True):
        assert prediction["model_name"] == MODEL_NAME and prediction["model_version"] == "1"
        assert len(prediction["top_k"]) == 3
        top = prediction["top_k"][0]
        assert top["probability"] == pytest.approx(float(row.max()), abs=1e-5)
        assert served_registry.classes[top["class_index"]] == top["label"]
        probabilities = [s["probability"] for s in prediction["top_k"]]
        assert probabilities == sorted(probabilities, reverse=True)

    encoded = [base64.b64encode(png).decode() for png in reversed(pngs)]
    as_json = httpx.post(f"{serve_url}/v1/predict", json={"images": encoded}, timeout=30)
    assert _top1(as_json) == labels[::-1]
    assert len(as_json.json()["predictions"][0]["top_k"]) == 5  # the default k


def test_top_k_beyond_the_classes_answers_every_class(
    serve_url: str, served_registry: ServedRegistry
) -> None:
    response = httpx.post(
        f"{serve_url}/v1/predict?top_k=1000", files=_files(served_registry.pngs[:1])
    )
    scores = response.json()["predictions"][0]["top_k"]
    assert sorted(s["label"] for s in scores) == sorted(served_registry.classes)
    assert sum(s["probability"] for s in scores) == pytest.approx(1.0, abs=1e-4)


def test_served_predictions_equal_visionops_evaluate(
    serve_url: str, served_registry: ServedRegistry
) -> None:
    from visionops.training.model_eval import evaluate_model

    evaluation = evaluate_model(
        f"models:/{MODEL_NAME}/1",
        "val",
        tracking_uri=served_registry.tracking_uri,
        log_to_mlflow=False,
    )
    classes = served_registry.classes
    predicted: list[int] = []
    for start in range(0, len(served_registry.pngs), 64):
        chunk = served_registry.pngs[start : start + 64]
        labels = _top1(httpx.post(f"{serve_url}/v1/predict", files=_files(chunk), timeout=60))
        predicted += [classes.index(label) for label in labels]
    truth = served_registry.labels
    assert len(predicted) == len(truth) == evaluation.result.num_images
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long)
    for t, p in zip(truth.tolist(), predicted, strict=True):
        confusion[t, p] += 1
    assert torch.equal(confusion, evaluation.result.confusion)


def test_concurrent_clients_share_batches_and_each_gets_its_own_answers(
    start_server,
    served_registry: ServedRegistry,  # type: ignore[no-untyped-def]
) -> None:
    server = start_server(
        "--max-batch-size", "16", "--max-wait-ms", "50", "--reload-interval-s", "0"
    )
    images = served_registry.images[:48]
    expected = [
        served_registry.classes[i]
        for i in served_registry.probabilities(1, images).argmax(1).tolist()
    ]
    # 48 requests of one or two images each, each image different, all at once.
    requests = [list(range(i, min(i + 1 + i % 2, 48))) for i in range(48)]

    def ask(indices: list[int]) -> tuple[list[int], list[str]]:
        response = httpx.post(
            f"{server.url}/v1/predict",
            files=_files([served_registry.pngs[i] for i in indices]),
            timeout=60,
        )
        return indices, _top1(response)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, requests))
    for indices, labels in answers:
        assert labels == [expected[i] for i in indices]

    text = httpx.get(f"{server.url}/metrics").text
    images_sent = sum(len(r) for r in requests)
    batches = metric_value(text, names.BATCH_SIZE + "_count", role="production")
    assert metric_value(text, names.BATCH_SIZE + "_sum", role="production") >= images_sent
    assert batches < images_sent  # some batch held more than one image
    assert metric_value(text, names.BATCH_SIZE + "_bucket", role="production", le="1.0") < batches
    assert metric_value(
        text, names.REQUESTS, route="/v1/predict", method="POST", status="200"
    ) == len(requests)
    assert metric_value(text, names.QUEUE_WAIT + "_count") == images_sent
    assert (
        metric_value(text, names.INFERENCE_DURATION + "_count", version="1", role="production")
        == batches
    )
    assert metric_value(text, names.TOP1_CONFIDENCE + "_count", version="1") == images_sent
    assert (
        metric_value(
            text,
            names.MODEL_INFO,
            name=MODEL_NAME,
            version="1",
            alias="production",
            backend="torch",
            role="production",
        )
        == 1
    )
    assert metric_value(text, names.QUEUE_DEPTH, role="production") == 0
    server.stop()


def test_the_openapi_schema_and_its_page(serve_url: str) -> None:
    schema = httpx.get(f"{serve_url}/openapi.json").json()
    predict = schema["paths"]["/v1/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert {"200", "400", "413", "415", "503"} <= set(predict["responses"])
    assert "/v2/models/{name}/infer" in schema["paths"]
    page = httpx.get(f"{serve_url}/docs")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    assert "/metrics" not in schema["paths"]  # Prometheus' endpoint, not part of the API


def test_an_onnx_variant_is_served_on_onnx_runtime(
    start_server,
    served_registry: ServedRegistry,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    # `visionops optimize` registers the variant; in a process of its own, as the Makefile
    # keeps ONNX Runtime out of the process that runs the Ray and torchrun tests.
    optimized = subprocess.run(
        [
            sys.executable,
            "-m",
            "visionops",
            "optimize",
            "--model-uri",
            f"models:/{MODEL_NAME}/1",
            "--methods",
            "onnx",
            "--tracking-uri",
            served_registry.tracking_uri,
            "--latency-runs",
            "5",
            "--threads",
            "1",
            "--output-dir",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert optimized.returncode == 0, optimized.stderr
    variants = json.loads(optimized.stdout.splitlines()[-1])["variants"]
    version = next(v["version"] for v in variants if v["name"] == "onnx")
    served_registry.set_alias("onnx-variant", version)
    server = start_server(
        "--reload-interval-s", "0", model_uri=f"models:/{MODEL_NAME}@onnx-variant"
    )
    images = served_registry.images[:6]
    response = httpx.post(
        f"{server.url}/v1/predict?top_k=1000", files=_files(served_registry.pngs[:6]), timeout=30
    )
    body = response.json()
    assert body["model"]["version"] == str(version)
    assert body["model"]["backend"] == "onnxruntime"
    expected = served_registry.probabilities(1, images)  # the torch source's, TTA included
    for prediction, row in zip(body["predictions"], expected, strict=True):
        served = {s["class_index"]: s["probability"] for s in prediction["top_k"]}
        assert [served[i] for i in range(len(row))] == pytest.approx(row.tolist(), abs=1e-4)
    server.stop()
