"""Knowledge distillation (Hinton et al., 2015) as ordinary training: a loss, not a loop.

A run with a teacher trains as any other; only the per-batch loss changes, to a blend of the
teacher's softened predictions and the labels::

    visionops train --recipe quickstart --width-multiplier 0.125 \\
        --teacher models:/vision-classifier/3 --distill-temperature 4 --distill-alpha 0.9
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from visionops.config import TrainConfig, check_field
from visionops.errors import ConfigError, VisionOpsError
from visionops.training.model_source import load_logged_module

#: ``loss(logits, labels, images)``: what the loop minimises for one micro-batch; ``images``
#: are the (augmented) images the logits were computed from.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
    + (1 - alpha) * cross_entropy(student, labels)``.

    Args:
        labels: class indices, or class probabilities (CutMix/MixUp).
        temperature: ``T``; above 1 it reveals how the teacher ranks the wrong classes.
        alpha: weight of the soft term; 0 gives plain cross-entropy.
    """
    hard = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    # Softmax at T shrinks the soft term's gradients by 1/T^2; T^2 restores them, so changing
    # T does not also change how much the teacher weighs against the labels.
    # In float32: bf16 logits divided by T and exponentiated lose the small probabilities the
    # soft term is about.
    student = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    soft = F.kl_div(student, teacher, reduction="batchmean", log_target=True)
    return alpha * temperature**2 * soft + (1 - alpha) * hard


def create_loss(cfg: TrainConfig, teacher: nn.Module | None = None) -> LossFn:
    """The loss ``cfg`` trains with: cross-entropy on the labels, blended with the teacher's
    soft predictions on the same images when there is a teacher."""
    smoothing = cfg.optim.label_smoothing
    if teacher is None:

        def cross_entropy(
            logits: torch.Tensor, labels: torch.Tensor, _: torch.Tensor
        ) -> torch.Tensor:
            return F.cross_entropy(logits, labels, label_smoothing=smoothing)

        return cross_entropy

    temperature, alpha = cfg.distill.distill_temperature, cfg.distill.distill_alpha

    def distill(logits: torch.Tensor, labels: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        # The loss only reads the teacher's logits through new tensors (float, / T): autograd
        # would refuse to save an inference tensor itself for the backward.
        with torch.inference_mode():
            teacher_logits = teacher(images)
        return distillation_loss(logits, teacher_logits, labels, temperature, alpha, smoothing)

    return distill


def load_teacher(
    cfg: TrainConfig, num_classes: int, sample_image: torch.Tensor, device: torch.device
) -> nn.Module:
    """``cfg.distill.teacher`` on ``device``, frozen, checked on one of the data's images.

    It is the exported program MLflow logged, in eval mode: its BatchNorm uses the running
    statistics, so a prediction does not depend on the rest of the batch. ``train()`` and
    ``eval()`` are not supported on it, and it needs neither.

    Raises:
        ConfigError: the teacher cannot be loaded, does not take the data's images, or predicts
            another number of classes.
    """
    uri = cfg.distill.teacher
    assert uri is not None, "only called for a run with a teacher"
    try:
        teacher = load_logged_module(uri, cfg.tracking.tracking_uri)
    except VisionOpsError as error:
        # MLflow's download errors run over several lines; the last one says what is missing.
        reason = _last_line(error.__cause__ or error)
        raise _teacher_error(
            uri,
            f"cannot load it as a teacher ({reason}); give a logged model, e.g. "
            "models:/NAME/VERSION or runs:/RUN_ID/model",
        ) from error
    teacher = teacher.to(device).requires_grad_(False)
    image = sample_image.unsqueeze(0).to(device)
    try:
        with torch.inference_mode():
            predicted = teacher(image).shape[-1]
    except (AssertionError, RuntimeError) as error:  # the exported program's input guards
        shape = "x".join(map(str, image.shape[1:]))
        raise _teacher_error(
            uri, f"it does not take this data's {shape} images ({_last_line(error)})"
        ) from error
    check_field(
        cfg,
        "teacher",
        predicted == num_classes,
        f"the teacher predicts {predicted} classes, the data has {num_classes}",
    )
    return teacher


def _teacher_error(uri: str, message: str) -> ConfigError:
    return ConfigError(f"invalid configuration: teacher={uri!r}: {message}")


def _last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
