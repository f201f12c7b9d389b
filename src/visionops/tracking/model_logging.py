"""Log the trained model, register it by name, and answer images through ``mlflow models serve``.

A logged model is MLflow's ``pytorch`` flavor in the ``pt2`` format (``torch.export``), which
visionops loads with ``load_pytorch_model``, plus a ``python_function`` flavor that takes
encoded images rather than tensors (``visionops.serving.pyfunc``)::

    mlflow models serve -m models:/vision-classifier@production --env-manager local

This module is the MLflow flavor module ``mlflow.models.Model.log`` is given: ``log_model``
calls it with ``flavor=`` this module, and it calls back ``save_model``. The MLmodel metadata
holds the class names, the test-time augmentation and the image shape
(``visionops.tracking.client.serving_metadata``), so the pyfunc and the HTTP server answer as
``visionops evaluate`` scores without the training data.
"""

from __future__ import annotations

import base64
import copy
import io
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import Array
from torch import nn

import visionops
from visionops import names
from visionops._quiet import import_torchao
from visionops.tracking.client import (
    process_tracking_uri,
    register_model_version,
    serving_metadata,
    tracking_client,
)

#: The module whose ``_load_pyfunc`` answers the ``python_function`` flavor (named, not imported:
#: serving builds on tracking).
PYFUNC_LOADER_MODULE = "visionops.serving.pyfunc"
#: The environment files ``mlflow.pytorch.save_model`` writes next to the MLmodel.
_CONDA_ENV_FILE, _PYTHON_ENV_FILE = "conda.yaml", "python_env.yaml"
_REQUIREMENTS_FILE = "requirements.txt"
_PYFUNC_EXAMPLE_IMAGES = 2  # base64 PNGs in the logged input example (what MLflow validates)

#: What ``mlflow models serve`` enforces (a string column) and what the pyfunc answers.
PYFUNC_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", names.PYFUNC_IMAGE_COLUMN)]),
    outputs=Schema(
        [
            ColSpec("string", names.PYFUNC_LABEL_COLUMN),
            ColSpec("double", names.PYFUNC_PROBABILITY_COLUMN),
            ColSpec(Array("double"), names.PYFUNC_PROBABILITIES_COLUMN),
        ]
    ),
)


def log_model(
    model: nn.Module,
    example_images: torch.Tensor,
    register_as: str | None,
    run_id: str,
    tracking_uri: str,
    extra_requirements: tuple[str, ...] = (),
    *,
    classes: Sequence[str],
    tta: str,
) -> ModelInfo:
    """Log ``model`` (float32 images in [0, 1], NCHW -> logits) to run ``run_id``.

    The model is saved in MLflow's default ``pt2`` format (``torch.export``): loading it runs no
    pickled code and needs only torch; its image pyfunc needs visionops too (``--env-manager
    local`` in an environment with visionops installed). The requirements are stated rather
    than inferred (inference imports the model in a subprocess and costs seconds). The example
    batch has more than one image so that the exported batch dimension stays dynamic.

    Args:
        classes: the class names, in the order of the model's outputs.
        tta: the test-time augmentation evaluation applies (a key of
            ``visionops.training.evaluate.TTA_MODES``), which the pyfunc applies too.

    Raises:
        ValueError: ``classes`` does not name every output of the model.
    """
    exportable = copy.deepcopy(model).float().cpu().eval().to(memory_format=torch.contiguous_format)
    example = example_images[:4].float().cpu().contiguous()
    with torch.no_grad():
        logits = exportable(example)
    if logits.shape[-1] != len(classes):
        raise ValueError(
            f"the model has {logits.shape[-1]} outputs but {len(classes)} class names were given"
        )
    requirements = [
        f"torch=={torch.__version__.split('+')[0]}",
        # The image pyfunc's loader module; __version__ also holds where visionops runs from
        # its sources (PYTHONPATH=src, as scripts/gpu-check.sh does), uninstalled.
        f"visionops=={visionops.__version__}",
        *extra_requirements,
    ]
    # log_model has no tracking URI argument (see visionops.tracking.client).
    experiment_id = tracking_client(tracking_uri).get_run(run_id).info.experiment_id
    with process_tracking_uri(tracking_uri, experiment_id):
        info = Model.log(
            artifact_path=None,  # deprecated for name, but still a required argument
            name="model",
            flavor=sys.modules[__name__],  # calls save_model below
            metadata=serving_metadata(classes, tta, example.shape[1:]),
            run_id=run_id,
            serialization_format="pt2",  # recorded on the logged model, as mlflow.pytorch does
            pytorch_model=exportable,
            tensor_signature=infer_signature(example.numpy(), logits.numpy()),
            example_batch=example,
            pip_requirements=requirements,
        )
    if register_as is not None:  # as Model.log's registered_model_name, without its notices
        version = register_model_version(info.model_uri, register_as, tracking_uri)
        info.registered_model_version = int(version.version)
    return info


def save_model(
    path: str,
    mlflow_model: Model,
    pytorch_model: nn.Module,
    tensor_signature: ModelSignature,
    example_batch: torch.Tensor,
    pip_requirements: list[str],
    serialization_format: str = "pt2",
    **kwargs: Any,
) -> None:
    """The flavor ``Model.log`` saves with: ``mlflow.pytorch.save_model`` (``pt2``), then the
    ``python_function`` flavor, signature and input example of the image pyfunc.

    ``torch.export`` needs the tensor signature and example; ``mlflow models serve`` enforces
    the MLmodel's signature, so the MLmodel ends with the pyfunc's string column and the image
    shape moves to the metadata. The example is passed as a torch tensor, which MLflow neither
    saves as the input example nor serves through ``mlflow.pytorch``'s own pyfunc.
    """
    del kwargs  # Model.log's own options (validate_serving_input) that it reads itself
    mlflow.pytorch.save_model(
        pytorch_model,
        path,
        mlflow_model=mlflow_model,
        signature=tensor_signature,
        input_example=example_batch,
        pip_requirements=pip_requirements,
        serialization_format=serialization_format,
    )
    for name in (_CONDA_ENV_FILE, _PYTHON_ENV_FILE):
        if not os.path.isfile(os.path.join(path, name)):
            raise RuntimeError(f"mlflow.pytorch.save_model wrote no {name} in {path}")
    # No ``data``: the loader is given the model folder, MLmodel and all.
    mlflow.pyfunc.add_to_model(
        mlflow_model,
        loader_module=PYFUNC_LOADER_MODULE,
        conda_env=_CONDA_ENV_FILE,
        python_env=_PYTHON_ENV_FILE,
    )
    mlflow_model.signature = PYFUNC_SIGNATURE
    # MLflow has no public call that saves an input example (flavors save their own, and
    # Model.log does not); custom flavors such as sktime's use this one, which writes
    # input_example.json and serving_input_example.json.
    from mlflow.models.utils import _save_example

    images = encode_pngs(example_batch[:_PYFUNC_EXAMPLE_IMAGES])
    _save_example(mlflow_model, pd.DataFrame({names.PYFUNC_IMAGE_COLUMN: images}), path)
    mlflow_model.save(os.path.join(path, "MLmodel"))


def encode_pngs(images: torch.Tensor) -> list[str]:
    """Base64 PNGs of ``images`` (N, C, H, W; float in [0, 1] or uint8): what the pyfunc takes."""
    from PIL import Image

    if images.dtype != torch.uint8:
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    encoded = []
    for image in images.permute(0, 2, 3, 1).cpu().numpy():
        pixels = image[..., 0] if image.shape[-1] == 1 else image  # grey: (H, W)
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded


def load_pytorch_model(model_dir: str, **kwargs: Any) -> Any:
    """``mlflow.pytorch.load_model`` of a downloaded model folder. An INT8 program from torchao's
    PT2E flow (``visionops optimize --methods int8-pt2e``) holds quantised ops that only
    deserialise once torchao has registered them; such a model lists torchao among its
    requirements (``visionops.optimize.registration`` logs it so), and only for it is torchao
    imported: that takes seconds, on every command that loads a model."""
    if "torchao" in _requirements(model_dir):
        import_torchao()
    return mlflow.pytorch.load_model(model_dir, **kwargs)


def _requirements(model_dir: str) -> set[str]:
    """The names of the packages a logged model's ``requirements.txt`` lists."""
    path = os.path.join(model_dir, _REQUIREMENTS_FILE)
    if not os.path.isfile(path):
        return set()
    with open(path) as lines:
        return {re.split(r"[\s=<>!~;\[]", line.strip(), maxsplit=1)[0].lower() for line in lines}
