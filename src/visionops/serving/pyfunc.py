"""The ``python_function`` flavor of a logged pt2 model: encoded images in, labels out.

MLflow loads it through ``_load_pyfunc`` (the MLmodel names this module as its loader), so
``mlflow.pyfunc.load_model`` and ``mlflow models serve`` answer images the way ``visionops
evaluate`` scores them: decoded and resized as training read them, with the model's
test-time augmentation, softmaxed. It needs visionops installed where it runs::

    mlflow models serve -m models:/vision-classifier@production --env-manager local
    curl -s localhost:5000/invocations -H 'Content-Type: application/json' \\
        -d '{"dataframe_split": {"columns": ["image"], "data": [["<base64 PNG>"]]}}'
    # {"predictions": [{"label": "cat", "probability": 0.93, "probabilities": [...]}]}
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from visionops import names
from visionops.serving.decode import ImageRejected, decode_image
from visionops.serving.predictor import Logits, check_tta, class_probabilities
from visionops.tracking.client import image_shape, model_classes, model_metadata, model_tta
from visionops.tracking.model_logging import load_pytorch_model


class ImagePyfunc:
    """A classifier that takes base64 images and returns class names and probabilities."""

    def __init__(
        self, model: Logits, classes: Sequence[str], tta: str, input_shape: Sequence[int]
    ) -> None:
        channels, height, width = input_shape
        if height != width or channels != 3:
            raise ValueError(
                f"the image pyfunc serves square RGB images; this model takes {list(input_shape)}"
            )
        self.model = model
        self.classes = tuple(classes)
        self.tta = check_tta(tta)
        self.image_size = height

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per image of ``model_input``: ``label``, ``probability``, ``probabilities``.

        Args:
            model_input: a DataFrame with a string column ``image`` (base64 of PNG, JPEG or
                WebP bytes), a list of such strings, or a dict ``{"image": strings}``. (Through
                ``mlflow.pyfunc``, which enforces the signature first: a DataFrame or a dict.)
            params: unused (MLflow passes the request's).

        Raises:
            MlflowException: an input that is not a base64 image (the server answers 400).
        """
        encoded = _encoded_images(model_input)
        images = [self._decode(position, text) for position, text in enumerate(encoded)]
        columns = [
            names.PYFUNC_LABEL_COLUMN,
            names.PYFUNC_PROBABILITY_COLUMN,
            names.PYFUNC_PROBABILITIES_COLUMN,
        ]
        if not images:
            return pd.DataFrame(columns=columns)
        probabilities = class_probabilities(self.model, torch.stack(images), self.tta)
        top_probability, top = probabilities.max(dim=-1)
        return pd.DataFrame(
            {
                columns[0]: [self.classes[index] for index in top.tolist()],
                columns[1]: top_probability.double().tolist(),
                columns[2]: probabilities.double().tolist(),
            }
        )

    def _decode(self, position: int, text: str | bytes) -> torch.Tensor:
        from mlflow.exceptions import MlflowException

        try:
            data = base64.b64decode(text, validate=True)
            return decode_image(data, self.image_size)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise MlflowException.invalid_parameter_value(
                f"image {position} is not base64 text: {exc}"
            ) from exc
        except ImageRejected as exc:
            raise MlflowException.invalid_parameter_value(f"image {position}: {exc}") from exc


def _load_pyfunc(path: str, model_config: Mapping[str, Any] | None = None) -> ImagePyfunc:
    """MLflow's loader entry point: ``path`` is the model folder (the flavor has no ``data``)."""
    del model_config  # nothing to configure
    metadata = model_metadata(Path(path))
    classes, shape = model_classes(metadata), image_shape(metadata)
    if classes is None or shape is None or len(shape) != 3:
        raise ValueError(
            f"the MLmodel in {path} has no {names.CLASSES_METADATA_KEY} or "
            f"{names.INPUT_SHAPE_METADATA_KEY} metadata; log it with visionops to serve images"
        )
    model = load_pytorch_model(path)
    return ImagePyfunc(model, classes, model_tta(metadata), shape)


def _encoded_images(model_input: Any) -> list[str | bytes]:
    from mlflow.exceptions import MlflowException

    column = names.PYFUNC_IMAGE_COLUMN
    if isinstance(model_input, pd.DataFrame):
        if column not in model_input.columns:
            raise MlflowException.invalid_parameter_value(
                f"the input has no {column!r} column (columns: {list(model_input.columns)})"
            )
        # MLflow turns a dict {"image": [...]} into one row that holds the list.
        return [
            text
            for cell in model_input[column].tolist()
            for text in (cell if isinstance(cell, (list, tuple)) else [cell])
        ]
    if isinstance(model_input, Mapping):
        if column not in model_input:
            raise MlflowException.invalid_parameter_value(
                f"the input has no {column!r} key (keys: {list(model_input)})"
            )
        found = model_input[column]
        return [found] if isinstance(found, (str, bytes)) else list(found)
    if isinstance(model_input, (str, bytes)):
        return [model_input]
    return list(model_input)
