"""A registered model version loaded for serving: its runtime, classes and preprocessing.

The served answer is the one ``visionops evaluate`` would give: images are resized to the
model's input side as the dataset cache resizes them (``serving.decode``), scaled to [0, 1],
and averaged over the test-time augmentation the training run evaluated with
(``serving.predictor``). Which runtime runs it follows the version: its ``pytorch`` flavor on
torch, or its ``onnx`` flavor on the runtime its MLmodel names (ONNX Runtime or OpenVINO)::

    served = load_version("clf", "3", tracking_uri, backend="auto")
    probabilities = served.probabilities(images_uint8)
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from visionops.errors import VisionOpsError
from visionops.serving.predictor import Logits, class_probabilities
from visionops.serving.settings import Backend
from visionops.tracking.client import (
    download_model,
    image_shape,
    model_classes,
    model_metadata,
    model_tta,
    tracking_client,
)

logger = logging.getLogger(__name__)

#: ``--backend`` -> the runtime an ONNX flavor runs on.
_ONNX_BACKENDS = {"onnx": "onnxruntime", "openvino": "openvino"}


class ModelUnavailable(VisionOpsError):
    """The registry has no such version, or it cannot be loaded for serving."""


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    runtime: str  # torch, onnxruntime or openvino
    classes: tuple[str, ...]
    input_shape: tuple[int, ...]  # one image: (channels, height, width)
    tta: str
    logits: Logits

    @property
    def image_size(self) -> int:
        return self.input_shape[-1]

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(N, classes) for uint8 images (N, C, H, W) of the model's input shape."""
        return class_probabilities(self.logits, images, self.tta)

    def warm_up(self, batch_sizes: tuple[int, ...]) -> float:
        """Run each batch size once, so the first requests do not pay for lazy
        initialisation (allocator, kernels, graph optimisation); the seconds it took."""
        started = time.monotonic()
        for size in batch_sizes:
            self.probabilities(torch.zeros(size, *self.input_shape, dtype=torch.uint8))
        return time.monotonic() - started


def resolve_alias(name: str, alias: str, tracking_uri: str | None) -> str:
    """The version ``alias`` points at.

    Raises:
        ModelUnavailable: no registered model ``name`` or no alias ``alias`` on it.
    """
    from mlflow.exceptions import MlflowException

    try:
        version = tracking_client(tracking_uri).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ModelUnavailable(f"registered model {name!r} has no alias {alias!r}: {exc}") from exc
    return str(version.version)


def load_version(
    name: str,
    version: str,
    tracking_uri: str | None,
    backend: Backend = "auto",
    tta: str | None = None,
    threads: int | None = None,
) -> ServedModel:
    """Download and load version ``version`` of registered model ``name``.

    Raises:
        ModelUnavailable: the version does not exist, cannot be loaded, does not have the
            flavor ``backend`` needs, or has no signature with one image input.
    """
    from mlflow.exceptions import MlflowException

    uri = tracking_client(tracking_uri).tracking_uri
    model_uri = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory(prefix="visionops-serve-") as folder:
        try:
            model_dir = download_model(model_uri, uri, Path(folder))
            metadata = model_metadata(model_dir)
            runtime = _runtime(metadata.flavors, metadata.metadata, backend, model_uri)
            logits = _load_logits(model_dir, metadata.flavors, runtime, threads)
        except (MlflowException, OSError, RuntimeError, ValueError) as exc:
            raise ModelUnavailable(f"cannot load {model_uri} for serving: {exc}") from exc
    shape = image_shape(metadata)
    if shape is None or len(shape) != 3 or shape[1] != shape[2]:
        raise ModelUnavailable(
            f"{model_uri} has no square image input in its signature or metadata (got {shape})"
        )
    classes = model_classes(metadata) or _numbered_classes(logits, shape)
    return ServedModel(name, version, runtime, classes, shape, tta or model_tta(metadata), logits)


def _runtime(
    flavors: dict[str, object], metadata: dict[str, object] | None, backend: Backend, uri: str
) -> str:
    from visionops.inference.onnx_runtimes import registered_runtime

    if backend == "auto":
        if "onnx" in flavors:
            return registered_runtime(metadata)
        backend = "torch"
    needed = "pytorch" if backend == "torch" else "onnx"
    if needed not in flavors:
        raise ValueError(
            f"{uri} has no {needed} flavor for --backend {backend} (it has: "
            f"{', '.join(sorted(flavors))}); use --backend auto"
        )
    return "torch" if backend == "torch" else _ONNX_BACKENDS[backend]


def _load_logits(
    model_dir: Path, flavors: dict[str, object], runtime: str, threads: int | None
) -> Logits:
    if runtime == "torch":
        from visionops.tracking.model_logging import load_pytorch_model

        return load_pytorch_model(str(model_dir), map_location="cpu")
    import os

    from visionops.inference.onnx_runtimes import onnx_predictor

    onnx_flavor = flavors["onnx"]
    assert isinstance(onnx_flavor, dict)
    # The runtimes read the file into their own memory: the folder may go once loaded.
    predict = onnx_predictor(
        str(model_dir / str(onnx_flavor["data"])), runtime, threads or os.cpu_count() or 1
    )

    def logits(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(predict(images.numpy()))

    return logits


def _numbered_classes(logits: Logits, shape: tuple[int, ...]) -> tuple[str, ...]:
    """Class labels for a model logged without its class names: their indices."""
    with torch.no_grad():
        count = int(logits(torch.zeros(1, *shape)).shape[-1])
    logger.warning("the model names no classes; answering class indices as labels")
    return tuple(str(index) for index in range(count))
