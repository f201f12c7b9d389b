"""The Open Inference Protocol v2 (KServe / Triton REST), with Triton's binary tensor extension.

``{name}`` is the registered model's name. ``POST /v2/models/{name}/infer`` takes one input:

- ``FP32`` of shape ``[N, C, H, W]``: images in [0, 1], as the model's signature takes them;
- ``UINT8`` of shape ``[N, H, W, C]``: pixels, channels last (what an image library holds);
- ``BYTES`` of shape ``[N]``: encoded PNG/JPEG/WebP files, decoded like ``/v1/predict``'s.

It answers ``probabilities`` (FP32 ``[N, classes]``) and ``label`` (BYTES ``[N]``, the top-1
class). Tensors travel as JSON ``data`` or, with the binary extension (what ``tritonclient``
sends by default), as raw bytes after a JSON header of ``Inference-Header-Content-Length``
bytes; a BYTES element in JSON is the base64 of the file (JSON cannot carry raw bytes), in
binary it is the file itself behind a 4-byte little-endian length.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from visionops import __version__
from visionops.serving.decode import ImageRejected, decode_image
from visionops.serving.model import ServedModel
from visionops.serving.service import ModelService, NotReady
from visionops.serving.settings import ServeConfig

_HEADER_LENGTH = "Inference-Header-Content-Length"
_BINARY_SIZE = "binary_data_size"
INPUT_NAME = "images"
OUTPUTS = ("probabilities", "label")
_NUMPY: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "UINT8": np.dtype("u1")}


class InferenceError(HTTPException):
    """A request the protocol refuses, answered with the protocol's ``{"error": ...}`` body
    (what tritonclient reads)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(status, message)


def router(service: ModelService, config: ServeConfig) -> APIRouter:
    api = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])

    def served(name: str, version: str | None = None) -> ServedModel:
        if name != config.model_name:
            raise InferenceError(
                f"unknown model {name!r}; this server serves {config.model_name!r}", 404
            )
        try:
            model = service.served()
        except NotReady as exc:
            raise InferenceError(str(exc), 503) from exc
        if version is not None and version != model.version:
            raise InferenceError(
                f"version {version} of {name!r} is not served (serving {model.version})", 404
            )
        return model

    @api.get("/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @api.get("/health/ready", responses={503: {"description": "no model loaded yet"}})
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    @api.get("")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "visionops", "version": __version__, "extensions": ["binary_tensor_data"]}

    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        model = served(name, version)
        return {
            "name": model.name,
            "versions": [model.version],
            "platform": f"visionops_{model.runtime}",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *model.input_shape]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.classes)]},
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
            ],
        }

    async def model_ready(name: str, version: str | None = None) -> dict[str, Any]:
        model = served(name, version)
        return {"name": model.name, "ready": True}

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        model = served(name, version)
        header, binary = _split_body(await request.body(), request.headers.get(_HEADER_LENGTH))
        inputs = header.get("inputs")
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise InferenceError(f"expected exactly one input tensor ({INPUT_NAME!r})")
        images = await run_in_threadpool(_images, inputs[0], binary, model, config)
        if len(images) > config.max_images_per_request:
            raise InferenceError(
                f"at most {config.max_images_per_request} images per request", status=413
            )
        answer = await service.predict(images)
        return _response(header, answer.probabilities, answer.model)

    for suffix in ("", "/versions/{version}"):
        api.add_api_route(f"/models/{{name}}{suffix}", model_metadata, methods=["GET"])
        api.add_api_route(f"/models/{{name}}{suffix}/ready", model_ready, methods=["GET"])
        api.add_api_route(
            f"/models/{{name}}{suffix}/infer",
            infer,
            methods=["POST"],
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        )
    return api


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary tensor data after it (empty without the extension)."""
    if header_length is None:
        length = len(body)
    elif header_length.isdigit() and int(header_length) <= len(body):
        length = int(header_length)
    else:
        raise InferenceError(f"{_HEADER_LENGTH} {header_length!r} is not a length within the body")
    try:
        header = json.loads(body[:length])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InferenceError(f"the inference request is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise InferenceError("the inference request must be a JSON object")
    return header, body[length:]


def _images(
    tensor: dict[str, Any], binary: bytes, model: ServedModel, config: ServeConfig
) -> torch.Tensor:
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise InferenceError("the input's shape must be a list of non-negative integers")
    parameters = tensor.get("parameters") or {}
    size = parameters.get(_BINARY_SIZE) if isinstance(parameters, dict) else None
    if size is not None and (not isinstance(size, int) or size > len(binary)):
        raise InferenceError(f"{_BINARY_SIZE} {size!r} is more than the binary data sent")
    raw = binary[:size] if size is not None else None
    c, h, w = model.input_shape
    if datatype == "BYTES":
        if len(shape) != 1 or shape[0] < 1:
            raise InferenceError("a BYTES input has shape [N]: N encoded images")
        files = _bytes_elements(raw, shape[0]) if raw is not None else _base64_elements(tensor)
        try:
            return torch.stack(
                [decode_image(f, model.image_size, config.max_pixels) for f in files]
            )
        except ImageRejected as exc:
            raise InferenceError(str(exc), status=exc.status) from exc
    expected = {"FP32": [c, h, w], "UINT8": [h, w, c]}
    if datatype not in expected:
        raise InferenceError(
            f"datatype {datatype!r} is not accepted: FP32 [N, {c}, {h}, {w}], "
            f"UINT8 [N, {h}, {w}, {c}] or BYTES [N]"
        )
    if len(shape) != 4 or shape[1:] != expected[datatype] or shape[0] < 1:
        layout = "N, C, H, W" if datatype == "FP32" else "N, H, W, C"
        raise InferenceError(
            f"a {datatype} input has shape [{layout}] = [N, "
            f"{', '.join(map(str, expected[datatype]))}]; got {shape}"
        )
    if shape[0] > config.max_images_per_request:
        raise InferenceError(f"at most {config.max_images_per_request} images per request", 413)
    array = _numeric(tensor, raw, _NUMPY[datatype], shape)
    images = torch.from_numpy(array.copy())
    return images.permute(0, 3, 1, 2).contiguous() if datatype == "UINT8" else images


def _numeric(
    tensor: dict[str, Any], raw: bytes | None, dtype: np.dtype[Any], shape: list[int]
) -> Any:
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise InferenceError(f"{len(raw)} bytes of binary data for {count} {dtype} values")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    try:
        array = np.asarray(tensor.get("data"), dtype=dtype if dtype.kind == "f" else np.int64)
    except (TypeError, ValueError) as exc:
        raise InferenceError(f"the input's data is not a list of numbers: {exc}") from exc
    if array.size != count:
        raise InferenceError(
            f"the input's data holds {array.size} values; shape {shape} needs {count}"
        )
    if dtype.kind == "u" and (array.min() < 0 or array.max() > 255):
        raise InferenceError("UINT8 values must lie in 0..255")
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise InferenceError("FP32 values must be finite")
    return array.astype(dtype).reshape(shape)


def _bytes_elements(raw: bytes, count: int) -> list[bytes]:
    """Triton's binary BYTES layout: each element's 4-byte little-endian length, then it."""
    elements, offset = [], 0
    for _ in range(count):
        if offset + 4 > len(raw):
            raise InferenceError("the binary BYTES data ends before its last element")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InferenceError("a binary BYTES element runs past the data sent")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def _base64_elements(tensor: dict[str, Any]) -> list[bytes]:
    data = tensor.get("data")
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        raise InferenceError("a BYTES input's data is a list of base64 strings")
    try:
        return [base64.b64decode(d, validate=True) for d in data]
    except (binascii.Error, ValueError) as exc:
        raise InferenceError(f"a BYTES element is not base64: {exc}") from exc


def _response(header: dict[str, Any], probabilities: torch.Tensor, model: ServedModel) -> Response:
    requested = header.get("outputs")
    parameters = header.get("parameters")
    if not isinstance(parameters, dict):
        parameters = {}
    binary_default = bool(parameters.get("binary_data_output", False))
    wanted: dict[str, bool] = {}
    if requested is None:
        wanted = dict.fromkeys(OUTPUTS, binary_default)
    elif isinstance(requested, list):
        for output in requested:
            name = output.get("name") if isinstance(output, dict) else None
            if name not in OUTPUTS:
                raise InferenceError(f"unknown output {name!r} (outputs: {', '.join(OUTPUTS)})")
            options = output.get("parameters") or {}
            wanted[name] = bool(options.get("binary_data", binary_default))
    else:
        raise InferenceError("outputs must be a list of {'name': ...}")
    values = probabilities.numpy().astype("<f4")
    labels = [model.classes[i] for i in probabilities.argmax(dim=1).tolist()]
    outputs, chunks = [], []
    for name, binary in wanted.items():
        if name == "probabilities":
            tensor: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(values.shape)}
            data: Any = values.reshape(-1).tolist()
            raw = values.tobytes()
        else:
            tensor = {"name": name, "datatype": "BYTES", "shape": [len(labels)]}
            data = labels
            raw = b"".join(struct.pack("<I", len(e)) + e for e in (s.encode() for s in labels))
        if binary:
            tensor["parameters"] = {_BINARY_SIZE: len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = data
        outputs.append(tensor)
    body: dict[str, Any] = {
        "model_name": model.name,
        "model_version": model.version,
        "outputs": outputs,
    }
    if "id" in header:
        body["id"] = header["id"]
    encoded = json.dumps(body).encode()
    if not chunks:
        return Response(encoded, media_type="application/json")
    return Response(
        encoded + b"".join(chunks),
        media_type="application/octet-stream",
        headers={_HEADER_LENGTH: str(len(encoded))},
    )
