"""Model registry: ``create_model(name, num_classes)``, ``list_models()``.

>>> from visionops.models import create_model
>>> net = create_model("resnet9", num_classes=10, width_multiplier=0.25)
"""

from visionops.models import (  # noqa: F401  (register the models)
    airbench,
    resnet9,
    torchvision_models,
)
from visionops.models.classifier import ImageClassifier
from visionops.models.registry import (
    MODELS,
    ModelSpec,
    create_model,
    list_models,
    model_specs,
    register_model,
)

__all__ = [
    "MODELS",
    "ImageClassifier",
    "ModelSpec",
    "create_model",
    "list_models",
    "model_specs",
    "register_model",
]
