"""The HTTP API of ``visionops serve``: ``/v1/predict``, the Open Inference Protocol (``/v2``,
``serving.oip``), ``/metrics``, ``/docs`` and the upload page at ``/``.

    app = create_app(ServeConfig(model_uri="models:/clf@production"))
    uvicorn.run(app, host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import base64
import binascii
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from visionops import __version__
from visionops.serving import oip
from visionops.serving.batcher import QueueFull
from visionops.serving.decode import ImageRejected, decode_image
from visionops.serving.metrics import CONTENT_TYPE, ServingMetrics
from visionops.serving.middleware import BodyLimit, RequestMetrics
from visionops.serving.model import ServedModel
from visionops.serving.service import ModelService, NotReady
from visionops.serving.settings import ServeConfig

logger = logging.getLogger(__name__)

UPLOAD_FIELD = "file"


class ClassScore(BaseModel):
    label: str
    class_index: int
    probability: float


class ImagePrediction(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    filename: str | None = Field(description="the upload's file name (multipart requests)")
    model_name: str
    model_version: str
    top_k: list[ClassScore] = Field(description="the k most probable classes, most probable first")


class ModelReference(BaseModel):
    name: str
    version: str
    alias: str | None
    backend: str = Field(description="torch, onnxruntime or openvino")


class PredictResponse(BaseModel):
    model: ModelReference
    predictions: list[ImagePrediction] = Field(description="one per image, in request order")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(min_length=1, description="base64 of PNG, JPEG or WebP files")


class ErrorResponse(BaseModel):
    detail: str


def _predict_openapi() -> dict[str, object]:
    """``/v1/predict`` reads its body itself (multipart or JSON), so its schema is stated."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            UPLOAD_FIELD: {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                            }
                        },
                        "required": [UPLOAD_FIELD],
                    }
                },
                "application/json": {"schema": PredictRequest.model_json_schema()},
            },
        }
    }


_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "corrupt or truncated image, bad base64, malformed body",
        413: "body, image or number of images over the limit",
        415: "not PNG, JPEG or WebP, or not multipart/JSON",
        503: "the queue is full (see Retry-After) or no model is loaded yet",
    }.items()
}


def create_app(config: ServeConfig) -> FastAPI:
    metrics = ServingMetrics()
    service = ModelService(config, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        # torch, MLflow and the model leave ~700,000 long-lived objects; a full collection over
        # them takes ~0.4 s and stalls every request at once (the p99 tail). Frozen, the
        # collector walks only what requests allocate.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await service.stop()  # uvicorn has stopped accepting and finished the requests

    app = FastAPI(
        title="visionops serve",
        version=__version__,
        description=f"Image classification with {config.model_uri}: dynamic batching, the "
        "Open Inference Protocol (/v2), Prometheus metrics (/metrics).",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.metrics = metrics
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes, metrics=metrics)
    app.add_middleware(RequestMetrics, metrics=metrics)
    _add_error_handlers(app, metrics)
    app.include_router(oip.router(service, config))

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra=_predict_openapi(),
        summary="Top-k classes of one or more images",
    )
    async def predict(
        request: Request,
        top_k: int = Query(5, ge=1, le=1000, description="classes per image"),
    ) -> PredictResponse:
        """Images as multipart files in the field ``file`` (repeat it for several) or as JSON
        ``{"images": [base64, ...]}``; answers per image, in request order."""
        served = service.served()
        filenames, payloads = await _read_images(request, config)
        images = await run_in_threadpool(_decode_all, payloads, served, config.max_pixels)
        answer = await service.predict(images)
        k = min(top_k, len(answer.model.classes))
        scores, indices = answer.probabilities.topk(k, dim=1)
        model = answer.model
        return PredictResponse(
            model=ModelReference(
                name=model.name, version=model.version, alias=config.alias, backend=model.runtime
            ),
            predictions=[
                ImagePrediction(
                    filename=filename,
                    model_name=model.name,
                    model_version=model.version,
                    top_k=[
                        ClassScore(label=model.classes[i], class_index=i, probability=p)
                        for p, i in zip(row_scores, row_indices, strict=True)
                    ],
                )
                for filename, row_scores, row_indices in zip(
                    filenames, scores.tolist(), indices.tolist(), strict=True
                )
            ],
        )

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/", include_in_schema=False)
    async def upload_page() -> HTMLResponse:
        page = resources.files("visionops.serving") / "static" / "index.html"
        return HTMLResponse(page.read_text(encoding="utf-8"))

    return app


async def _read_images(
    request: Request, config: ServeConfig
) -> tuple[list[str | None], list[bytes]]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limit = config.max_images_per_request
    if media_type == "multipart/form-data":
        try:
            form = await request.form(max_files=limit, max_fields=limit)
        except StarletteHTTPException as exc:  # Starlette's refusal of a form over its limits
            if "Too many" in str(exc.detail):
                raise _too_many(limit) from exc
            raise
        uploads = [u for u in form.getlist(UPLOAD_FIELD) if isinstance(u, UploadFile)]
        if not uploads:
            raise HTTPException(400, f"no file in the multipart field {UPLOAD_FIELD!r}")
        payloads = [await upload.read() for upload in uploads]
        await form.close()
        return [upload.filename for upload in uploads], payloads
    if media_type == "application/json":
        try:
            body = PredictRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise HTTPException(
                400, f'expected {{"images": [base64, ...]}}: {where}: {first["msg"]}'
            ) from exc
        if len(body.images) > limit:
            raise _too_many(limit)
        return [None] * len(body.images), [_base64(text, i) for i, text in enumerate(body.images)]
    raise HTTPException(
        415, "send the images as multipart/form-data (field 'file') or application/json"
    )


def _too_many(limit: int) -> HTTPException:
    return HTTPException(413, f"at most {limit} images per request")


def _base64(text: str, index: int) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HTTPException(400, f"images[{index}] is not valid base64: {exc}") from exc


def _decode_all(payloads: list[bytes], served: ServedModel, max_pixels: int) -> torch.Tensor:
    images = []
    for index, payload in enumerate(payloads):
        try:
            images.append(decode_image(payload, served.image_size, max_pixels))
        except ImageRejected as exc:
            raise type(exc)(f"image {index}: {exc}") from exc
    return torch.stack(images)


def _add_error_handlers(app: FastAPI, metrics: ServingMetrics) -> None:
    kinds = {415: "unsupported_image", 413: "image_too_large", 400: "invalid_image"}

    @app.exception_handler(ImageRejected)
    async def image_rejected(_: Request, exc: ImageRejected) -> JSONResponse:
        metrics.errors.labels(kinds.get(exc.status, "invalid_image")).inc()
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(oip.InferenceError)
    async def inference_error(_: Request, exc: oip.InferenceError) -> JSONResponse:
        metrics.errors.labels("invalid_tensor" if exc.status_code == 400 else "inference").inc()
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.exception_handler(QueueFull)
    async def queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        metrics.errors.labels("queue_full").inc()
        return JSONResponse(
            {"detail": str(exc)},
            status_code=503,
            headers={"Retry-After": str(exc.retry_after_s)},
        )

    @app.exception_handler(NotReady)
    async def not_ready(_: Request, exc: NotReady) -> JSONResponse:
        metrics.errors.labels("not_ready").inc()
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})
