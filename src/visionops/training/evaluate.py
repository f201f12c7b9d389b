"""One evaluation pass: loss, accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from visionops.training.runtime import Runtime


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


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, runtime: Runtime, num_classes: int
) -> EvalResult:
    """Evaluate ``model``, which the caller has put in eval mode (a loaded torch.export model
    is in it already and refuses ``.eval()``)."""
    device = runtime.device
    # Sums stay on the device until the end: one host-device sync per pass, not per batch.
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for images, labels in loader:
        images = images.to(device, non_blocking=True, memory_format=runtime.memory_format)
        labels = labels.to(device, non_blocking=True)
        with runtime.autocast():
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum")
        confusion += torch.bincount(
            labels * num_classes + logits.argmax(dim=1), minlength=num_classes**2
        )
    matrix = confusion.view(num_classes, num_classes).cpu()
    total = int(matrix.sum())
    if total == 0:
        raise ValueError("evaluation loader yielded no images")
    return EvalResult(float(loss_sum) / total, float(matrix.diag().sum()) / total, matrix)
