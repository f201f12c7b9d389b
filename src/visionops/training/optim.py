"""``create_optimizer`` and ``create_scheduler`` from an ``OptimConfig``."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from visionops.config import OptimConfig


def create_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD or AdamW; weight decay only on weights of dimension >= 2.

    Decaying BatchNorm scales and biases only fights the normalisation and hurts accuracy.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))


def create_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int
) -> LRScheduler:
    """A per-optimizer-step schedule over ``epochs * steps_per_epoch`` steps."""
    total = steps_per_epoch * epochs
    warmup = min(total - 1, round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "onecycle":
        return OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=total,
            pct_start=max(warmup, 1) / total,
            anneal_strategy="linear",
            cycle_momentum=False,
        )
    if cfg.schedule == "cosine":
        return LambdaLR(optimizer, _WarmupCosine(warmup, total))
    return LambdaLR(optimizer, _Constant())


class _WarmupCosine:
    """Linear warm-up to the peak, then cosine decay to zero (a class so it pickles)."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class _Constant:
    def __call__(self, step: int) -> float:
        return 1.0
