"""One evaluation pass: loss, accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

import contextlib
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
    was_training = model.training
    _set_mode(model, training=False)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    loss_sum = 0.0
    for images, labels in loader:
        images = images.to(runtime.device, non_blocking=True, memory_format=runtime.memory_format)
        labels = labels.to(runtime.device, non_blocking=True)
        with runtime.autocast():
            logits = model(images)
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        pairs = labels * num_classes + logits.argmax(dim=1)
        confusion += (
            torch.bincount(pairs, minlength=num_classes**2).view(num_classes, num_classes).cpu()
        )
    _set_mode(model, training=was_training)
    total = int(confusion.sum())
    if total == 0:
        raise ValueError("evaluation loader yielded no images")
    return EvalResult(loss_sum / total, float(confusion.diag().sum()) / total, confusion)


def _set_mode(model: nn.Module, training: bool) -> None:
    # A torch.export module (a loaded pt2 model) refuses mode changes: it keeps the mode it was
    # exported in, which is eval.
    with contextlib.suppress(NotImplementedError):
        model.train(training)
