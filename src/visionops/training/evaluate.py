"""One evaluation pass: loss, accuracy, per-class accuracy and the confusion matrix, with
optional test-time augmentation (TTA)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from visionops.training.runtime import Runtime
from visionops.training.world import SINGLE_PROCESS, World


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    confusion: torch.Tensor  # [true class, predicted class] counts

    @property
    def per_class_accuracy(self) -> list[float]:
        totals = self.confusion.sum(dim=1).clamp_min(1)
        return (self.confusion.diag() / totals).tolist()

    @property
    def num_images(self) -> int:
        return int(self.confusion.sum())


Predictor = Callable[[torch.Tensor], torch.Tensor]


def _flip(model: Predictor) -> Predictor:
    return lambda images: 0.5 * (model(images) + model(images.flip(-1)))


def _flip_shift(model: Predictor) -> Predictor:
    """airbench's TTA: the flip average, half-weighted with that of two 1-pixel diagonal
    shifts (reflect-padded), which CIFAR-style random-crop training makes in-distribution."""
    flip = _flip(model)

    def predict(images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
        shifted = [padded[..., :height, :width], padded[..., 2:, 2:]]
        shift_average = torch.stack([flip(s.contiguous()) for s in shifted]).mean(0)
        return 0.5 * flip(images) + 0.5 * shift_average

    return predict


TTA_MODES: dict[str, Callable[[Predictor], Predictor]] = {
    "none": lambda model: model,
    "flip": _flip,
    "flip_shift": _flip_shift,
}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    runtime: Runtime,
    num_classes: int,
    tta: str = "none",
    world: World = SINGLE_PROCESS,
) -> EvalResult:
    """Evaluate ``model``, which the caller has put in eval mode (a loaded torch.export model
    is in it already and refuses ``.eval()``). ``tta`` is a key of ``TTA_MODES``. In a job of
    N processes each evaluates its shard of the split (``loader``) and the result is the
    whole split's."""
    predict = TTA_MODES[tta](model)
    device = runtime.device
    # Sums stay on the device until the end: one host-device sync per pass, not per batch.
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for images, labels in loader:
        images = images.to(device, non_blocking=True, memory_format=runtime.memory_format)
        labels = labels.to(device, non_blocking=True)
        with runtime.autocast():
            logits = predict(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        confusion += torch.bincount(
            labels * num_classes + logits.argmax(dim=1), minlength=num_classes**2
        )
    world.sum_(confusion, loss_sum)
    matrix = confusion.view(num_classes, num_classes).cpu()
    total = int(matrix.sum())
    if total == 0:
        raise ValueError("evaluation loader yielded no images")
    return EvalResult(float(loss_sum) / total, float(matrix.diag().sum()) / total, matrix)
