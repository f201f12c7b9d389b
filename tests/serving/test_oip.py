"""The Open Inference Protocol v2, driven by Triton's own HTTP client: health, metadata and
inference with every accepted input, in JSON and with the binary tensor extension."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from serving_support import MODEL_NAME, ServedRegistry

pytestmark = pytest.mark.integration


@pytest.fixture
def triton(serve_url: str):  # type: ignore[no-untyped-def]
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(serve_url.removeprefix("http://"))
    yield client
    client.close()


def test_health_and_metadata(triton, served_registry: ServedRegistry) -> None:  # type: ignore[no-untyped-def]
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(MODEL_NAME) and triton.is_model_ready(MODEL_NAME, "1")
    assert not triton.is_model_ready(MODEL_NAME + "-other")
    assert triton.get_server_metadata()["name"] == "visionops"
    metadata = triton.get_model_metadata(MODEL_NAME)
    assert metadata["name"] == MODEL_NAME and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 16, 16]}]
    classes = len(served_registry.classes)
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]} in metadata[
        "outputs"
    ]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["FP32", "UINT8", "BYTES"])
def test_infer_with_every_input_type(  # type: ignore[no-untyped-def]
    triton, served_registry: ServedRegistry, datatype: str, binary: bool
) -> None:
    import tritonclient.http as httpclient

    images = served_registry.images[:5]
    expected = served_registry.probabilities(1, images).numpy()
    if datatype == "FP32":
        array = images.float().numpy() / 255.0
    elif datatype == "UINT8":
        array = images.permute(0, 2, 3, 1).contiguous().numpy()
    else:  # raw files in binary, base64 of the files in JSON (JSON cannot carry bytes)
        files = served_registry.pngs[:5]
        array = np.array(files if binary else [base64.b64encode(f) for f in files], dtype=object)
    tensor = httpclient.InferInput("images", list(array.shape), datatype)
    tensor.set_data_from_numpy(
        array.astype(np.float32) if datatype == "FP32" else array, binary_data=binary
    )
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=binary)
        for name in ("probabilities", "label")
    ]
    result = triton.infer(MODEL_NAME, [tensor], outputs=outputs, request_id="req-7")
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=1e-5)
    labels = [served_registry.classes[i] for i in expected.argmax(1)]
    assert [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")] == labels
    response = result.get_response()
    assert response["model_version"] == "1" and response["id"] == "req-7"


def test_outputs_default_to_binary_when_none_are_named(  # type: ignore[no-untyped-def]
    triton, served_registry: ServedRegistry
) -> None:
    import tritonclient.http as httpclient

    array = served_registry.images[:2].permute(0, 2, 3, 1).contiguous().numpy()
    tensor = httpclient.InferInput("images", list(array.shape), "UINT8")
    tensor.set_data_from_numpy(array)
    result = triton.infer(MODEL_NAME, [tensor])
    assert result.as_numpy("probabilities").shape == (2, len(served_registry.classes))


@pytest.mark.parametrize(
    ("tensor", "phrase"),
    [
        (
            {"name": "images", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0] * 192},
            "[N, C, H, W] = [N, 3, 16, 16]",
        ),
        (
            {"name": "images", "datatype": "INT64", "shape": [1, 3, 16, 16], "data": [0] * 768},
            "datatype 'INT64' is not accepted",
        ),
        (
            {"name": "images", "datatype": "FP32", "shape": [1, 3, 16, 16], "data": [0.0] * 7},
            "holds 7 values",
        ),
        (
            {"name": "images", "datatype": "UINT8", "shape": [1, 16, 16, 3], "data": [300] * 768},
            "0..255",
        ),
        ({"name": "images", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}, "base64"),
        (
            {
                "name": "images",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(b"text").decode()],
            },
            "not an image",
        ),
    ],
)
def test_a_tensor_of_the_wrong_shape_or_dtype_is_400_naming_what_is_expected(
    serve_url: str, tensor: dict[str, object], phrase: str
) -> None:
    response = httpx.post(f"{serve_url}/v2/models/{MODEL_NAME}/infer", json={"inputs": [tensor]})
    assert response.status_code in (400, 415), response.text
    assert phrase in response.json()["error"]


def test_unknown_model_or_output_is_refused(serve_url: str) -> None:
    tensor = {"name": "images", "datatype": "BYTES", "shape": [0], "data": []}
    unknown = httpx.post(f"{serve_url}/v2/models/nope/infer", json={"inputs": [tensor]})
    assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["error"]
    valid = {"name": "images", "datatype": "UINT8", "shape": [1, 16, 16, 3], "data": [0] * 768}
    output = httpx.post(
        f"{serve_url}/v2/models/{MODEL_NAME}/infer",
        json={"inputs": [valid], "outputs": [{"name": "logits"}]},
    )
    assert output.status_code == 400 and "unknown output 'logits'" in output.json()["error"]
    assert httpx.post(f"{serve_url}/v2/models/{MODEL_NAME}/infer", content=b"{").status_code == 400
