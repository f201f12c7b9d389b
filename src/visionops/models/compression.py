"""Network transforms applied before training: structured pruning, quantisation-aware training.

``visionops train --start-from models:/clf/3 --compression prune-structured --prune-ratio 0.5``
builds the network, loads the starting weights, applies the transform, then trains as usual.
A transform must be deterministic given the weights it starts from: a resumed run rebuilds the
network the same way and then loads its checkpoint into it.

Each transform is one registered entry (``register_compression``); the heavy libraries they use
(torch-pruning, torchao) are imported inside them. A ``qat`` network is a torch.export graph with
fake quantisers, not a model to log: ``visionops optimize --methods qat`` trains it with
``--no-log-model``, converts it to INT8 and logs that.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from visionops._quiet import import_torchao
from visionops._registry import Registry
from visionops.errors import ConfigError

#: ``transform(model, example_images, prune_ratio) -> model`` (example: float images in [0, 1]).
CompressionTransform = Callable[[nn.Module, torch.Tensor, float], nn.Module]


@dataclass(frozen=True)
class Compression:
    name: str
    description: str
    transform: CompressionTransform
    #: Whether the result can be logged as an ordinary PyTorch model at the end of training.
    loggable: bool = True
    #: Whether torch.compile can compile the result (``--compile``; auto leaves it eager).
    compilable: bool = True


COMPRESSIONS: Registry[Compression] = Registry("compression")


def register_compression(
    name: str, description: str, *, loggable: bool = True, compilable: bool = True
) -> Callable[[CompressionTransform], CompressionTransform]:
    def decorate(transform: CompressionTransform) -> CompressionTransform:
        COMPRESSIONS.register(name, Compression(name, description, transform, loggable, compilable))
        return transform

    return decorate


@register_compression("none", "Train the network as built.")
def _unchanged(model: nn.Module, example: torch.Tensor, prune_ratio: float) -> nn.Module:
    return model


#: Structured pruning removes channels in steps of ``_MAX_CHANNEL_RATIO / _PRUNE_STEPS`` (2% of
#: each layer's channels) until the parameter target is met, so it overshoots by one step at most.
_MAX_CHANNEL_RATIO = 0.9
_PRUNE_STEPS = 45


@register_compression(
    "prune-structured",
    "Remove whole channels (torch-pruning DepGraph, L2 magnitude) until prune_ratio of the "
    "parameters are gone; the classifier keeps every output.",
)
def _prune_structured(model: nn.Module, example: torch.Tensor, prune_ratio: float) -> nn.Module:
    import torch_pruning as tp

    # A copy: torch-pruning edits layers in place and the caller may still hold the original.
    model = copy.deepcopy(model)
    was_training = model.training
    # The dependency graph is traced with a forward pass; in train mode it would move the
    # batch-norm statistics with the example images and the result would depend on them.
    model.eval()
    original = _count(model)
    target = (1 - prune_ratio) * original
    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=_MAX_CHANNEL_RATIO,
        iterative_steps=_PRUNE_STEPS,
        ignored_layers=_classifier_layers(model, example),
    )
    # Removing a fraction r of the channels removes about 1 - (1 - r)^2 of the weights, and
    # less where layers are coupled (residual sums), so the steps are counted, not computed.
    for _ in range(_PRUNE_STEPS):
        if _count(model) <= target:
            break
        pruner.step()
    if _count(model) > target:
        raise ConfigError(
            f"prune_ratio={prune_ratio} cannot be reached: removing "
            f"{_MAX_CHANNEL_RATIO:.0%} of every layer's channels leaves "
            f"{_count(model) / original:.0%} of the parameters; use a "
            "smaller prune_ratio"
        )
    return model.train(was_training)


def _count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _classifier_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The linear layers that produce the logits: their outputs are the classes."""
    with torch.no_grad():
        num_classes = model(example).shape[-1]
    layers: list[nn.Module] = [
        m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes
    ]
    if not layers:
        raise ValueError(f"found no linear layer with {num_classes} outputs to keep unpruned")
    return layers


@register_compression(
    "qat",
    "Quantisation-aware training: the torch.export graph with INT8 fake quantisation "
    "(torchao PT2E, X86 quantizer); convert it with `visionops optimize --methods qat`.",
    loggable=False,
    # Inductor fails on the graph's fused observer + fake-quantise op (torch 2.14: its output
    # has the shape of the observed tensor, where the compiled code expects one scale).
    compilable=False,
)
def _quantization_aware(model: nn.Module, example: torch.Tensor, prune_ratio: float) -> nn.Module:
    import_torchao()  # torchao's first import here, in `train --compression qat`
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    # Exported in train mode, the graph holds batch norm in its training form, which is the
    # pattern prepare_qat_pt2e folds into the convolutions; the batch size stays free.
    batch = torch.export.Dim("batch", min=1)
    graph = torch.export.export(
        model.train(), (example.float().contiguous(),), dynamic_shapes=({0: batch},)
    ).module()
    quantizer = X86InductorQuantizer().set_global(
        get_default_x86_inductor_quantization_config(is_qat=True)
    )
    return ExportedNetwork(prepare_qat_pt2e(graph, quantizer)).train()


class ExportedNetwork(nn.Module):
    """A torch.export graph (prepared for QAT, or converted, by torchao's PT2E flow) that
    ``train()`` and ``eval()`` switch like an eager module.

    Such a graph ignores ``training`` (torchao rewrites its batch-norm and dropout ops instead)
    and its own ``train()`` raises. torchao's ``allow_exported_model_train_eval`` binds methods
    to the graph that a deep copy drops and that return None, so ``model.cpu().eval()`` breaks;
    a class keeps the switch. In eval mode the fake quantisers' observers are frozen as well, so
    evaluating on validation images does not move the ranges ``convert_pt2e`` will use.
    """

    def __init__(self, exported: torch.fx.GraphModule) -> None:
        super().__init__()
        self.exported = exported

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.exported(images)

    def train(self, mode: bool = True) -> ExportedNetwork:
        from torchao.quantization.pt2e import (
            disable_observer,
            enable_observer,
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )

        if mode:
            move_exported_model_to_train(self.exported)
        else:
            move_exported_model_to_eval(self.exported)
        self.exported.apply(enable_observer if mode else disable_observer)
        # The flags as well, for code and exporters that read them: nn.Module's train(), since
        # the graph's own is the one that raises.
        nn.Module.train(self.exported, mode)
        self.training = mode
        return self


def apply_compression(
    name: str, model: nn.Module, example: torch.Tensor, prune_ratio: float
) -> nn.Module:
    return COMPRESSIONS.get(name).transform(model, example, prune_ratio)
