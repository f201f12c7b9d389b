"""Log the trained model with its signature and an input example; register it by name."""

from __future__ import annotations

import copy

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
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            run_id=run_id,  # passed on to mlflow.models.Model.log
        )
