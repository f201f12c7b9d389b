"""Class probabilities of decoded images, computed the way ``visionops evaluate`` scores them.

Every served backend (the ``pt2`` program, an ONNX file on ONNX Runtime or OpenVINO) takes
float32 NCHW images in [0, 1] and returns logits; normalisation is inside the model. What is
added here is what evaluation adds: uint8 -> [0, 1], the training run's test-time
augmentation, and a softmax::

    probabilities = class_probabilities(model, images_uint8, tta="flip")  # (N, classes)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2

from visionops.training.evaluate import TTA_MODES

Logits = Callable[[torch.Tensor], torch.Tensor]  # float32 NCHW in [0, 1] -> (N, classes)


def check_tta(tta: str) -> str:
    """``tta`` when it is a known test-time augmentation mode.

    Raises:
        ValueError: an unknown mode.
    """
    if tta not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {tta!r} (known: {', '.join(TTA_MODES)})")
    return tta


@torch.inference_mode()
def class_probabilities(model: Logits, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Softmax of ``model``'s logits for ``images`` (N, C, H, W; uint8, or float in [0, 1]),
    averaged over the views of test-time augmentation ``tta`` as evaluation averages them."""
    batch = v2.functional.to_dtype(images, torch.float32, scale=True).contiguous()
    logits = TTA_MODES[check_tta(tta)](model)(batch)
    return torch.softmax(logits.float(), dim=-1)
