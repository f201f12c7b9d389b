"""``create_optimizer`` and ``create_scheduler`` from an ``OptimConfig``."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from visionops.config import OptimConfig, warmup_epochs_for


def scaled_lr(cfg: OptimConfig, global_batch: int) -> float:
    """``cfg.lr`` under ``cfg.lr_scaling`` for a global batch (images per optimizer step)."""
    ratio = global_batch / cfg.lr_reference_batch
    factors = {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}
    return cfg.lr * factors[cfg.lr_scaling]


def create_optimizer(
    model: nn.Module, cfg: OptimConfig, global_batch: int | None = None
) -> torch.optim.Optimizer:
    """SGD or AdamW over three parameter groups, at ``scaled_lr`` for ``global_batch``
    (``lr`` itself when it is not given).

    - weights (dimension >= 2): ``lr`` and ``weight_decay``;
    - normalisation-layer parameters: ``lr * norm_lr_scale`` (airbench gives BatchNorm biases
      64x: they carry the per-channel offsets and have no weight decay to fight), and no decay
      unless ``norm_weight_decay``;
    - other biases: ``lr``, no decay (decaying them only fights the normalisation).
    """
    norm_ids = _norm_parameter_ids(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    norm = [p for p in trainable if id(p) in norm_ids]
    weights = [p for p in trainable if id(p) not in norm_ids and p.ndim >= 2]
    biases = [p for p in trainable if id(p) not in norm_ids and p.ndim < 2]
    lr = cfg.lr if global_batch is None else scaled_lr(cfg, global_batch)
    norm_decay = cfg.weight_decay / cfg.norm_lr_scale if cfg.norm_weight_decay else 0.0
    groups: list[dict[str, Any]] = [
        {"name": "weights", "params": weights, "lr": lr, "weight_decay": cfg.weight_decay},
        {"name": "norm", "params": norm, "lr": lr * cfg.norm_lr_scale, "weight_decay": norm_decay},
        {"name": "biases", "params": biases, "lr": lr, "weight_decay": 0.0},
    ]
    groups = [group for group in groups if group["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0
        )
    return torch.optim.AdamW(groups, lr=lr, betas=(cfg.momentum, 0.999))


_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_NORM_OPS = {
    torch.ops.aten.batch_norm,
    torch.ops.aten.native_batch_norm,
    torch.ops.aten._native_batch_norm_legit,
    torch.ops.aten._native_batch_norm_legit_no_training,
    torch.ops.aten.layer_norm,
    torch.ops.aten.native_layer_norm,
    torch.ops.aten.group_norm,
    torch.ops.aten.native_group_norm,
}


def _norm_parameter_ids(model: nn.Module) -> set[int]:
    """Parameters of normalisation layers and, in an exported graph (a QAT network), which has
    no layers, the parameters its normalisation ops read."""
    ids = {
        id(p)
        for module in model.modules()
        if isinstance(module, _NORM_LAYERS)
        for p in module.parameters(recurse=False)
    }
    for graph in model.modules():
        if not isinstance(graph, torch.fx.GraphModule):
            continue
        parameters = dict(graph.named_parameters())
        for node in graph.graph.nodes:
            if getattr(node.target, "overloadpacket", None) not in _NORM_OPS:
                continue
            # A get_attr of a running statistic names a buffer: it is not in ``parameters``.
            names = [
                a.target for a in node.args if isinstance(a, torch.fx.Node) and a.op == "get_attr"
            ]
            ids.update(id(parameters[name]) for name in names if name in parameters)
    return ids


def create_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, steps_per_epoch: int, epochs: int
) -> LRScheduler:
    """A per-optimizer-step schedule over ``epochs * steps_per_epoch`` steps."""
    total = steps_per_epoch * epochs
    warmup = min(total - 1, round(warmup_epochs_for(cfg, epochs) * steps_per_epoch))
    if cfg.schedule == "onecycle" and total >= 3:
        # OneCycleLR divides by the length of each phase less one step: the rise needs two
        # steps or more and the fall one (a run of fewer than three steps keeps a constant rate).
        rise = min(max(warmup, 2), total - 1)
        return OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            div_factor=1 / cfg.lr_start_fraction,
            final_div_factor=cfg.lr_start_fraction / cfg.lr_end_fraction,
            total_steps=total,
            pct_start=rise / total,
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
