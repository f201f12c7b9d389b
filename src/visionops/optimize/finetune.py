"""Fine-tuning a transformed copy of the source model through the ordinary ``train(cfg)``.

A pruned or QAT-prepared network is trained like any run: tracked in MLflow (nested under the
optimisation's run), checkpointed, and resumable with ``visionops train --resume``, because its
config says how to rebuild it (``start_from`` = the source version, ``compression``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from visionops.config import Override, TrainConfig, resolve_config
from visionops.training.model_source import build_classifier


@dataclass(frozen=True)
class FinetunePlan:
    source_uri: str  # a pinned URI (models:/NAME/VERSION): a resume must rebuild the same net
    base: TrainConfig  # the source run's configuration, with the command's data overrides
    epochs: int
    lr_fraction: float
    prune_ratio: float
    tracking_uri: str
    experiment: str | None
    output_dir: Path


def finetune_config(
    plan: FinetunePlan, method: str, compression: str, parent_run_id: str | None
) -> TrainConfig:
    source = "visionops optimize"
    values = {
        "epochs": plan.epochs,
        "start_from": plan.source_uri,
        "compression": compression,
        "prune_ratio": plan.prune_ratio,
        "lr": plan.base.optim.lr * plan.lr_fraction,
        # A short run from trained weights: no warm-up, a cosine decay to zero.
        "schedule": "cosine",
        "warmup_epochs": 0,
        "run_name": f"{method}-finetune",
        "tracking_uri": plan.tracking_uri,
        "experiment": plan.experiment,
        "parent_run_id": parent_run_id,
        "register_as": None,
        "log_model": False,  # the optimisation logs the variant it makes of the result
        "output_dir": str(plan.output_dir),
    }
    if compression == "qat":
        # Fake quantisation simulates INT8 on FP32 values: under bf16 autocast it would
        # simulate the wrong arithmetic, and the graph was traced in the contiguous format.
        values.update(precision="fp32", channels_last="off")
    return resolve_config(plan.base, [Override(k, v, source) for k, v in values.items()])


def run_finetune(
    plan: FinetunePlan, method: str, compression: str, parent_run_id: str | None
) -> tuple[nn.Module, str | None]:
    """Train the transformed network; returns it (CPU, eval mode) and its run id."""
    from visionops.data import build_data
    from visionops.training import train
    from visionops.training.checkpoint import list_checkpoints, load_checkpoint

    cfg = finetune_config(plan, method, compression, parent_run_id)
    result = train(cfg)
    data = build_data(cfg.data, cfg.seed)
    model = build_classifier(cfg, data.num_classes, data.mean, data.std, data.sample_images)
    newest = list_checkpoints(result.run_dir)[0]
    model.load_state_dict(load_checkpoint(newest)["model"])
    return model.cpu().eval(), result.run_id
