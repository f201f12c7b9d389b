"""Networks built from a config, and networks rebuilt from a logged model.

``build_classifier`` is what a training run trains: the registered architecture, started from a
logged model's weights (``start_from``) and transformed (``compression``) when the config says so.
``load_classifier`` rebuilds a logged model as that same eager module (what ``visionops optimize``
prunes, quantises and exports); ``load_logged_module`` loads it as MLflow stored it (a
``torch.export`` program: enough for inference, e.g. as a distillation teacher).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from visionops import names
from visionops.config import TrainConfig
from visionops.errors import ConfigError, VisionOpsError
from visionops.models import ImageClassifier, create_model
from visionops.models.compression import apply_compression
from visionops.tracking.client import (
    download_model,
    image_shape,
    model_metadata,
    resolve_tracking_uri,
    run_config,
)
from visionops.tracking.model_logging import load_pytorch_model

logger = logging.getLogger(__name__)

_DATA_INIT_SAMPLE = 5000  # training images a data-initialised model (airbench) looks at
_EXAMPLE_BATCH = 2  # images traced by transforms that follow the graph (pruning, QAT)


@dataclass
class LoggedClassifier:
    model_uri: str
    module: ImageClassifier | nn.Module  # eager, on the CPU, in eval mode
    config: TrainConfig  # the training run's: architecture, data, seed
    run_id: str | None  # the run that logged it
    num_classes: int
    input_shape: tuple[int, ...]  # one image: (channels, height, width)


def build_classifier(
    cfg: TrainConfig,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    sample_images: Callable[[int], torch.Tensor],
) -> nn.Module:
    """The network ``cfg`` trains, on the CPU: built, started from ``start_from``'s weights,
    then transformed by ``compression``."""
    backbone = create_model(
        cfg.model.name,
        num_classes,
        small_input_stem=cfg.model.small_input_stem,
        width_multiplier=cfg.model.width_multiplier,
    )
    model: nn.Module = ImageClassifier(backbone, mean, std)
    if cfg.model.start_from:
        start = load_classifier(cfg.model.start_from, cfg.tracking.tracking_uri)
        _load_weights(model, start.module, cfg.model.start_from, cfg.model.name)
    elif isinstance(model, ImageClassifier) and model.needs_data_init:
        model.init_from_data(sample_images(_DATA_INIT_SAMPLE))
    if cfg.model.compression != "none":
        example = sample_images(_EXAMPLE_BATCH)
        model = apply_compression(cfg.model.compression, model, example, cfg.model.prune_ratio)
    return model


def load_classifier(model_uri: str, tracking_uri: str | None = None) -> LoggedClassifier:
    """Rebuild the model logged at ``model_uri`` as the eager module its run trained.

    Raises:
        VisionOpsError: the model cannot be downloaded, has no training run to rebuild it from,
            or its weights do not fit the architecture that run configured.
    """
    uri = resolve_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="visionops-model-") as folder:
        stored, run_id, shape = _download(model_uri, uri, Path(folder))
    if run_id is None:
        raise VisionOpsError(f"model {model_uri} has no training run to rebuild it from")
    config = _run_config(run_id, uri, model_uri)
    num_classes = int(stored(torch.zeros(1, *shape)).shape[-1])
    # The logged weights replace the mean/std buffers and every parameter, so no data is read.
    module = build_classifier(
        config, num_classes, (0.0,) * shape[0], (1.0,) * shape[0], lambda n: torch.rand(n, *shape)
    )
    _load_weights(module, stored, model_uri, config.model.name)
    return LoggedClassifier(model_uri, module.eval(), config, run_id, num_classes, shape)


def load_logged_module(model_uri: str, tracking_uri: str | None = None) -> nn.Module:
    """The model at ``model_uri`` as MLflow stored it, on the CPU (for inference only)."""
    uri = resolve_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="visionops-model-") as folder:
        stored, _, _ = _download(model_uri, uri, Path(folder))
    return stored


def _download(
    model_uri: str, tracking_uri: str, folder: Path
) -> tuple[nn.Module, str | None, tuple[int, ...]]:
    from mlflow.exceptions import MlflowException

    try:
        model_dir = download_model(model_uri, tracking_uri, folder)
        metadata = model_metadata(model_dir)
        if "pytorch" not in metadata.flavors:
            raise VisionOpsError(
                f"model {model_uri} is not a PyTorch model (flavors: "
                f"{', '.join(sorted(metadata.flavors))}); use the model it was derived from"
            )
        stored = load_pytorch_model(str(model_dir), map_location="cpu")
    except (MlflowException, OSError) as exc:
        raise VisionOpsError(f"cannot load model {model_uri!r}: {exc}") from exc
    shape = image_shape(metadata)
    if shape is None:
        raise VisionOpsError(
            f"model {model_uri} records no image shape (no {names.INPUT_SHAPE_METADATA_KEY} "
            "metadata, nor a signature with one image input)"
        )
    return stored, metadata.run_id, shape


def _run_config(run_id: str, tracking_uri: str, model_uri: str) -> TrainConfig:
    from mlflow.exceptions import MlflowException

    try:
        return run_config(run_id, tracking_uri)
    except (MlflowException, OSError) as exc:
        raise VisionOpsError(
            f"model {model_uri} comes from run {run_id}, which has no "
            f"{names.RUN_CONFIG_ARTIFACT} to rebuild its architecture from: {exc}"
        ) from exc


def _load_weights(model: nn.Module, source: nn.Module, model_uri: str, name: str) -> None:
    try:
        model.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise ConfigError(
            f"invalid configuration: start_from={model_uri}: its weights do not fit model "
            f"{name!r} as configured (same model, width and classes needed): {first}"
        ) from exc
