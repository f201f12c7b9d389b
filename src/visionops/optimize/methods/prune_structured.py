"""``prune-structured``: whole channels removed (torch-pruning), then fine-tuned.

    visionops optimize --model-uri models:/clf/3 --methods prune-structured --prune-ratio 0.5

The network really shrinks: smaller convolutions that any runtime runs faster. The fine-tune is
an ordinary tracked training run (``compression=prune-structured``), resumable like any other.
"""

from __future__ import annotations

from visionops.optimize.method import OptimizeContext, register_method
from visionops.optimize.variant import Variant, count_parameters


@register_method(
    "prune-structured",
    "Channel pruning (torch-pruning, L2 magnitude) to --prune-ratio of the parameters, "
    "fine-tuned; eager PyTorch.",
)
def build(ctx: OptimizeContext) -> list[Variant]:
    import torch_pruning as tp

    pruned, run_id = ctx.finetune("prune-structured", "prune-structured")
    params, nonzero = count_parameters(pruned)
    # MACs of one image: the cost a batch-1 request pays.
    image = ctx.example(1)
    source_macs, source_params = tp.utils.count_ops_and_params(ctx.model, image)
    macs, _ = tp.utils.count_ops_and_params(pruned, image)
    notes = [
        f"parameters {source_params:,} -> {params:,} ({1 - params / source_params:.0%} fewer)",
        f"MACs per image {source_macs:,.0f} -> {macs:,.0f} ({1 - macs / source_macs:.0%} fewer)",
        f"fine-tuned for {ctx.options.finetune_epochs} epoch(s) in run {run_id}",
    ]
    return [
        Variant(
            "prune-structured",
            "prune-structured",
            "torch",
            "fp32",
            module=pruned,
            params=params,
            nonzero_params=nonzero,
            notes=notes,
            finetune_run_id=run_id,
        )
    ]
