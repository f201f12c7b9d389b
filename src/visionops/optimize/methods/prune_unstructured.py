"""``prune-unstructured``: the smallest weights set to zero (global L1 magnitude), no fine-tune.

    visionops optimize --model-uri models:/clf/3 --methods prune-unstructured --prune-ratio 0.5

Zeros compress well and show how much of the network the task needs, but dense kernels do the
same work on a zero as on any other number: expect no speed-up in the report.
"""

from __future__ import annotations

import copy

from torch import nn

from visionops.optimize.method import OptimizeContext, register_method
from visionops.optimize.variant import Variant, count_parameters

_PRUNED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@register_method(
    "prune-unstructured",
    "Global L1 magnitude pruning of conv/linear weights to --prune-ratio sparsity, no "
    "fine-tune; eager PyTorch (dense kernels: no speed-up).",
)
def build(ctx: OptimizeContext) -> list[Variant]:
    from torch.nn.utils import prune

    model = copy.deepcopy(ctx.model).eval()
    targets = [(m, "weight") for m in model.modules() if isinstance(m, _PRUNED_LAYERS)]
    ratio = ctx.options.prune_ratio
    # Global: the threshold is one magnitude for the whole network, so layers with many small
    # weights lose more of them than layers that need all of theirs.
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=ratio)
    for module, name in targets:
        prune.remove(module, name)  # the mask is folded into an ordinary weight tensor
    params, nonzero = count_parameters(model)
    weights = sum(module.weight.numel() for module, _ in targets)
    notes = [
        f"{ratio:.0%} of the {weights:,} conv/linear weights are zero "
        f"({nonzero:,} of {params:,} parameters non-zero)",
        "dense kernels do not skip zeros: same latency as the source model",
    ]
    return [
        Variant(
            "prune-unstructured",
            "prune-unstructured",
            "torch",
            "fp32",
            module=model,
            params=params,
            nonzero_params=nonzero,
            notes=notes,
        )
    ]
