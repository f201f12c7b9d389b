"""ONNX export of a classifier, checked against the PyTorch model it came from.

    visionops export --model-uri models:/vision-classifier/3 --format onnx --opset 18

``torch.onnx.export`` (the dynamo exporter) writes the graph with a dynamic batch axis;
``onnx.checker`` validates it, and ONNX Runtime must reproduce the PyTorch logits on the parity
images: max abs difference below ``PARITY_TOLERANCE`` and the same top-1 class for every image.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visionops.errors import VisionOpsError

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
INPUT_NAME = "images"  # float32 NCHW in [0, 1], as the logged PyTorch model takes
OUTPUT_NAME = "logits"
PARITY_TOLERANCE = 1e-4  # max abs logit difference ONNX Runtime may show against PyTorch
MIN_PARITY_IMAGES = 256


@dataclass(frozen=True)
class ParityResult:
    images: int
    max_abs_diff: float
    top1_agreement: float  # fraction of images with the same top-1 class

    @property
    def passed(self) -> bool:
        return self.max_abs_diff < PARITY_TOLERANCE and self.top1_agreement == 1.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "tolerance": PARITY_TOLERANCE}


def export_onnx(
    model: nn.Module, path: Path, example: torch.Tensor, opset: int = DEFAULT_OPSET
) -> Path:
    """Write ``model`` (eval mode, CPU) to ``path`` as ONNX with a dynamic batch axis and check
    it with ``onnx.checker``; the weights are embedded in the one file."""
    import onnx

    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        program = torch.onnx.export(
            model,
            (example[:2].float().contiguous(),),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: batch}},
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    except Exception as exc:  # the exporter raises many kinds; the user needs its message
        raise VisionOpsError(f"ONNX export failed (opset {opset}): {exc}") from exc
    assert program is not None  # the dynamo exporter always returns its program
    program.save(str(path), external_data=False)
    _strip_node_metadata(path)
    onnx.checker.check_model(str(path), full_check=True)
    return path


def _strip_node_metadata(path: Path) -> None:
    """Drop the Python stack trace and FX names the exporter records on every node (77 kB of a
    2 MB INT8 airbench file): a deployed model does not need them, and every variant made from
    this file would carry them."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(path))


def check_parity(
    model: nn.Module, onnx_path: Path, images: torch.Tensor, threads: int = 1
) -> ParityResult:
    """Compare ONNX Runtime's logits on ``images`` with ``model``'s."""
    from visionops.inference.onnx_runtimes import onnx_predictor

    predict = onnx_predictor(str(onnx_path), "onnxruntime", threads)
    max_diff, agree = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(images), 128):
            batch = images[start : start + 128].float().contiguous()
            expected = model(batch).float().numpy()
            got = predict(batch.numpy())
            max_diff = max(max_diff, float(np.abs(expected - got).max()))
            agree += int((expected.argmax(1) == got.argmax(1)).sum())
    return ParityResult(len(images), max_diff, agree / len(images))


@dataclass(frozen=True)
class ExportResult:
    model_uri: str
    path: Path
    opset: int
    size_mb: float
    parity: ParityResult

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_uri": self.model_uri,
            "path": str(self.path),
            "format": "onnx",
            "opset": self.opset,
            "size_mb": self.size_mb,
            "parity": self.parity.as_dict(),
        }


def export_registered(
    model_uri: str,
    path: Path | None = None,
    opset: int = DEFAULT_OPSET,
    tracking_uri: str | None = None,
    data_overrides: list[Any] | None = None,
    parity_images: int = MIN_PARITY_IMAGES,
) -> ExportResult:
    """Export the logged model at ``model_uri`` to ONNX and check it against PyTorch on
    ``parity_images`` validation images of its training run's data (test or training images
    for a model trained with val_fraction 0).

    Raises:
        VisionOpsError: the model cannot be loaded or exported, or parity fails (the file is
            kept for inspection).
    """
    from visionops.config import resolve_config
    from visionops.data import build_data, split_images
    from visionops.training.model_source import load_classifier

    if parity_images < MIN_PARITY_IMAGES:
        raise VisionOpsError(
            f"--parity-images {parity_images} is too few: at least {MIN_PARITY_IMAGES}"
        )
    source = load_classifier(model_uri, tracking_uri)
    cfg = resolve_config(source.config, data_overrides or [])
    data = build_data(cfg.data, cfg.seed)
    # Parity needs images, not labels: a model trained on every image (val_fraction 0) has no
    # val split, and its test or training images do as well.
    split = next(name for name in ("val", "test", "train") if name in data.split_names)
    available = len(data.split(split))  # type: ignore[arg-type]  # a sized dataset
    positions = torch.arange(min(parity_images, available))
    images, _ = split_images(data, split, positions)
    if len(images) < MIN_PARITY_IMAGES:  # a tiny split: repeat it, flipped
        images = torch.cat([images, images.flip(-1)] * (MIN_PARITY_IMAGES // len(images) + 1))
        images = images[:MIN_PARITY_IMAGES]
    target = path or Path(_default_name(model_uri))
    export_onnx(source.module, target, images[:2], opset)
    parity = check_parity(source.module, target, images)
    if not parity.passed:
        raise VisionOpsError(
            f"ONNX Runtime does not reproduce {model_uri} on {parity.images} images: max abs "
            f"logit difference {parity.max_abs_diff:.2e} (allowed {PARITY_TOLERANCE:g}), top-1 "
            f"agreement {100 * parity.top1_agreement:.2f}%; the file is kept at {target}"
        )
    return ExportResult(model_uri, target, opset, target.stat().st_size / 1e6, parity)


def _default_name(model_uri: str) -> str:
    """``models:/clf/3`` -> ``clf-3.onnx``; ``runs:/abc/model`` -> ``abc-model.onnx``."""
    tail = model_uri.split(":/", 1)[-1].strip("/")
    return tail.replace("/", "-") + ".onnx"
