"""Log the trained model with its signature and an input example; register it by name."""

from __future__ import annotations

import copy
from typing import Any

import mlflow
import torch
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from torch import nn

from visionops.tracking.client import process_tracking_uri


def log_model(
    model: nn.Module,
    example_images: torch.Tensor,
    register_as: str | None,
    run_id: str,
    tracking_uri: str,
    extra_requirements: tuple[str, ...] = (),
) -> ModelInfo:
    """Log ``model`` (float32 images in [0, 1], NCHW -> logits) to run ``run_id``.

    The model is saved in MLflow's default ``pt2`` format (``torch.export``): loading it runs no
    pickled code and needs no visionops install, only torch, so the requirements are stated
    rather than inferred (inference imports the model in a subprocess and costs seconds). The
    example batch has more than one image so that the exported batch dimension stays dynamic.
    """
    exportable = copy.deepcopy(model).float().cpu().eval().to(memory_format=torch.contiguous_format)
    example = example_images[:4].float().cpu().contiguous()
    with torch.no_grad():
        logits = exportable(example)
    signature = infer_signature(example.numpy(), logits.numpy())
    # log_model has no tracking URI argument (see visionops.tracking.client).
    with process_tracking_uri(tracking_uri):
        return mlflow.pytorch.log_model(
            exportable,
            name="model",
            signature=signature,
            input_example=example.numpy(),
            registered_model_name=register_as,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", *extra_requirements],
            run_id=run_id,  # passed on to mlflow.models.Model.log
        )


def load_pytorch_model(model_dir: str, **kwargs: Any) -> Any:
    """``mlflow.pytorch.load_model`` of a downloaded model folder. An INT8 program from torchao's
    PT2E flow (``visionops optimize --methods int8-pt2e``) holds quantised ops that only
    deserialise once torchao has registered them, so torchao is imported first when present."""
    import importlib.util

    if importlib.util.find_spec("torchao") is not None:
        import torchao.quantization.pt2e  # noqa: F401  (registers the quantized_decomposed ops)
    return mlflow.pytorch.load_model(model_dir, **kwargs)
