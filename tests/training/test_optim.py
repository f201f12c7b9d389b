from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from visionops.config import OptimConfig
from visionops.training.optim import create_optimizer, create_scheduler


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))


def _lrs(cfg: OptimConfig, steps_per_epoch: int = 10, epochs: int = 5) -> list[float]:
    model = nn.Linear(2, 2)
    optimizer = create_optimizer(model, cfg)
    scheduler = create_scheduler(optimizer, cfg, steps_per_epoch, epochs)
    lrs = []
    for _ in range(steps_per_epoch * epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_weight_decay_only_on_weight_matrices() -> None:
    model = _model()
    model(torch.zeros(1, 3, 8, 8))
    optimizer = create_optimizer(model, OptimConfig(weight_decay=0.01))
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert list(groups) == ["weights", "norm", "biases"]
    assert groups["weights"]["weight_decay"] == 0.01
    assert groups["norm"]["weight_decay"] == groups["biases"]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in groups["weights"]["params"])
    assert {p.ndim for p in groups["norm"]["params"]} == {1}
    assert len(groups["norm"]["params"]) == 2  # the BatchNorm scale and shift
    assert {p.ndim for p in groups["biases"]["params"]} == {1}
    grouped = sum(len(group["params"]) for group in groups.values())
    assert grouped == len(list(model.parameters()))


def test_sgd_and_adamw_settings() -> None:
    sgd = create_optimizer(nn.Linear(2, 2), OptimConfig(optimizer="sgd", lr=0.3, momentum=0.8))
    assert (
        isinstance(sgd, torch.optim.SGD)
        and sgd.defaults["nesterov"]
        and sgd.defaults["momentum"] == 0.8
    )
    adamw = create_optimizer(
        nn.Linear(2, 2), OptimConfig(optimizer="adamw", lr=1e-3, momentum=0.85)
    )
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.85, 0.999)


def test_onecycle_peaks_at_the_end_of_warmup_and_decays() -> None:
    lrs = _lrs(OptimConfig(schedule="onecycle", lr=0.4, warmup_epochs=1))
    assert max(lrs) == pytest.approx(0.4)
    assert lrs.index(max(lrs)) == 9  # the 10th step, the last of the warm-up epoch
    assert lrs[0] < 0.05 and lrs[-1] < 0.01
    assert all(later <= earlier for earlier, later in itertools.pairwise(lrs[9:]))


@pytest.mark.parametrize(
    ("warmup_epochs", "steps_per_epoch", "epochs"), [(0.0, 10, 2), (0.1, 10, 2), (0.5, 2, 2)]
)
def test_onecycle_with_a_warmup_of_one_step_or_none_rises_over_two(
    warmup_epochs: float, steps_per_epoch: int, epochs: int
) -> None:
    # Large global batches leave few steps per epoch; OneCycleLR cannot rise in fewer than two.
    cfg = OptimConfig(schedule="onecycle", lr=0.4, warmup_epochs=warmup_epochs)
    lrs = _lrs(cfg, steps_per_epoch, epochs)
    assert lrs.index(max(lrs)) == 1 and max(lrs) == pytest.approx(0.4)
    assert lrs[-1] < lrs[1]


def test_onecycle_shorter_than_three_steps_keeps_the_rate_constant() -> None:
    assert _lrs(OptimConfig(schedule="onecycle", lr=0.4, warmup_epochs=0.5), 1, 2) == [0.4, 0.4]


def test_cosine_warms_up_linearly_then_decays() -> None:
    lrs = _lrs(OptimConfig(schedule="cosine", lr=1.0, warmup_epochs=2))
    assert lrs[:20] == pytest.approx([(i + 1) / 20 for i in range(20)])
    assert lrs[20] == pytest.approx(1.0)
    assert lrs[-1] < 0.01


def test_constant() -> None:
    assert set(_lrs(OptimConfig(schedule="constant", lr=0.2))) == {0.2}
