"""The distillation loss: its limits (alpha 0 and 1), its temperature scaling, its factory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visionops.config import TrainConfig, with_fields
from visionops.training.distill import create_loss, distillation_loss

_CLASSES = 10


def _batch(seed: int = 0, size: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student logits, teacher logits and hard labels."""
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(size, _CLASSES, generator=generator) * 3
    teacher = torch.randn(size, _CLASSES, generator=generator) * 3
    labels = torch.randint(0, _CLASSES, (size,), generator=generator)
    return student, teacher, labels


def _soft_labels(labels: torch.Tensor) -> torch.Tensor:
    """MixUp-style class probabilities: each label blended with the next image's."""
    one_hot = F.one_hot(labels, _CLASSES).float()
    return 0.7 * one_hot + 0.3 * one_hot.roll(1, dims=0)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("soft", [False, True], ids=["hard-labels", "soft-labels"])
def test_alpha_zero_is_exactly_cross_entropy(smoothing: float, soft: bool) -> None:
    student, teacher, labels = _batch()
    if soft:
        labels = _soft_labels(labels)
    loss = distillation_loss(student, teacher, labels, 4.0, alpha=0.0, label_smoothing=smoothing)
    assert torch.equal(loss, F.cross_entropy(student, labels, label_smoothing=smoothing))


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_alpha_one_is_t_squared_kl_computed_by_hand(temperature: float) -> None:
    student, teacher, labels = _batch(size=3)
    loss = distillation_loss(student, teacher, labels, temperature, alpha=1.0)

    expected = 0.0
    for s_row, t_row in zip(student.double().tolist(), teacher.double().tolist(), strict=True):
        s_exp = [math.exp(v / temperature) for v in s_row]
        t_exp = [math.exp(v / temperature) for v in t_row]
        p_s = [v / sum(s_exp) for v in s_exp]
        p_t = [v / sum(t_exp) for v in t_exp]
        expected += sum(t * math.log(t / s) for t, s in zip(p_t, p_s, strict=True))
    expected = temperature**2 * expected / len(student)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_blend_weighs_soft_and_hard_terms() -> None:
    student, teacher, labels = _batch()
    soft = distillation_loss(student, teacher, labels, 2.0, alpha=1.0)
    hard = distillation_loss(student, teacher, labels, 2.0, alpha=0.0, label_smoothing=0.1)
    blend = distillation_loss(student, teacher, labels, 2.0, alpha=0.3, label_smoothing=0.1)
    torch.testing.assert_close(blend, 0.3 * soft + 0.7 * hard)


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_same_logits_as_the_teacher_give_no_soft_loss(temperature: float) -> None:
    student, _, labels = _batch()
    loss = distillation_loss(student, student.clone(), labels, temperature, alpha=1.0)
    assert loss.abs().item() < 1e-6


def test_t_squared_keeps_soft_gradients_of_the_same_size_for_large_t() -> None:
    """The soft gradient tends to (student - teacher) / (T^2 * classes) times T^2: a constant."""
    student, teacher, labels = _batch()

    def gradient_norm(temperature: float) -> float:
        logits = student.clone().requires_grad_(True)
        distillation_loss(logits, teacher, labels, temperature, alpha=1.0).backward()
        assert logits.grad is not None
        return logits.grad.norm().item()

    at_20, at_40, at_80 = gradient_norm(20.0), gradient_norm(40.0), gradient_norm(80.0)
    assert at_40 == pytest.approx(at_20, rel=0.01)
    assert at_80 == pytest.approx(at_40, rel=0.01)
    # Without the T^2 factor it would fall by 4x per doubling of T.


def test_bf16_logits_give_a_float32_soft_term() -> None:
    student, teacher, labels = _batch()
    loss = distillation_loss(student.bfloat16(), teacher.bfloat16(), labels, 4.0, alpha=1.0)
    assert loss.dtype == torch.float32


@pytest.fixture
def cfg() -> TrainConfig:
    return with_fields(
        TrainConfig(), label_smoothing=0.1, distill_temperature=3.0, distill_alpha=0.6
    )


def test_create_loss_without_a_teacher_is_cross_entropy(cfg: TrainConfig) -> None:
    student, _, labels = _batch()
    images = torch.rand(len(student), 3, 8, 8)
    loss = create_loss(cfg, None)
    for target in (labels, _soft_labels(labels)):
        expected = F.cross_entropy(student, target, label_smoothing=0.1)
        assert torch.equal(loss(student, target, images), expected)


class _FixedTeacher(nn.Module):
    """A frozen linear map of the mean colour, standing in for a logged model."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, _CLASSES)
        self.requires_grad_(False)
        self.seen: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(images)
        return self.linear(images.mean(dim=(2, 3)))


def test_create_loss_with_a_teacher_runs_it_on_the_same_images(cfg: TrainConfig) -> None:
    student, _, labels = _batch()
    images = torch.rand(len(student), 3, 8, 8)
    teacher = _FixedTeacher()
    logits = student.clone().requires_grad_(True)

    loss = create_loss(cfg, teacher)(logits, labels, images)
    loss.backward()

    assert teacher.seen == [images]
    expected = distillation_loss(student, teacher(images), labels, 3.0, 0.6, 0.1)
    torch.testing.assert_close(loss.detach(), expected)
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
