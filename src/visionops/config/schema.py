"""``TrainConfig``, the root of the config tree, and the flat names of its leaves.

Every leaf has a unique *flat name* (``lr``, ``batch_size``, ``model``): its CLI flag
(``--batch-size``), its environment variable (``VISIONOPS_BATCH_SIZE``) and its name in errors.

    >>> from visionops.config import CONFIG_FIELDS, TrainConfig, get_field
    >>> CONFIG_FIELDS["lr"].path, get_field(TrainConfig(), "lr")
    (('optim', 'lr'), 0.1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from visionops.config.fields import FieldSpec, RunOption, Section, collect_fields, is_section
from visionops.config.sections import (
    CheckpointConfig,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    TrackingConfig,
)


class FieldConflict(ValueError):
    """Values of several fields that do not fit together. ``resolve_config`` names where each
    came from (``--epochs``, ``VISIONOPS_WARMUP_EPOCHS``, ...)."""

    def __init__(self, values: Mapping[str, Any], problem: str, fix: str) -> None:
        """``problem`` refers to each field as ``{flat}`` (``{warmup_epochs} must be smaller
        than {epochs}``); ``fix`` says what to change."""
        self.values = dict(values)
        self.problem = problem
        self.fix = fix
        super().__init__(self.describe({}))

    def describe(self, sources: Mapping[str, str]) -> str:
        """The message, each field shown as ``flat=value (from SOURCE)`` where known."""
        shown = {}
        for flat, value in self.values.items():
            text = value if isinstance(value, str) and value.strip() else repr(value)
            where = f" (from {sources[flat]})" if flat in sources else ""
            shown[flat] = f"{flat}={text}{where}"
        return f"{self.problem.format(**shown)}: {self.fix}"


class TrainConfig(Section):
    """Everything ``visionops.training.train`` needs."""

    epochs: int = Field(10, gt=0, description="Training epochs.")
    seed: int = Field(0, ge=0, description="Seed for weights, data split, order and augmentation.")
    deterministic: bool = Field(
        False, description="Deterministic algorithms (bit-exact reruns and resumes on CPU)."
    )
    device: Literal["auto", "cpu", "cuda"] = RunOption(
        "auto", description="Device: auto, cpu or cuda."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast precision (auto: bf16 on CUDA, fp32 on CPU)."
    )
    channels_last: Literal["auto", "on", "off"] = Field(
        "auto", description="channels_last memory format (auto: on for CUDA)."
    )
    # A run option, as device is: compiled kernels compute the same network, differing from
    # eager ones only in float rounding (as two devices do), and auto follows the hardware, so
    # a run resumed on another machine, or eagerly to debug it, must not be refused.
    compile: Literal["auto", "on", "off"] = RunOption(
        "auto",
        description="torch.compile the model for training and evaluation (auto: on for CUDA).",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        explicit_warmup = self.optim.warmup_epochs
        if (
            self.optim.schedule != "constant"
            and explicit_warmup is not None
            and explicit_warmup >= self.epochs
        ):
            raise FieldConflict(
                {"warmup_epochs": explicit_warmup, "epochs": self.epochs},
                "{warmup_epochs} must be smaller than {epochs}",
                f"set warmup_epochs below {self.epochs}, or to none for a warm-up that scales "
                "with the run (warmup_fraction x epochs; without one, 0.3 x epochs, at most 1)",
            )
        if self.tracking.register_as and not self.tracking.log_model:
            raise ValueError(
                "register_as needs log_model=true: only a logged model can be registered"
            )
        return self


CONFIG_FIELDS: dict[str, FieldSpec] = {spec.flat: spec for spec in collect_fields(TrainConfig)}
#: The leaves by their path in the tree (``("optim", "lr")``).
FIELDS_BY_PATH = {spec.path: spec for spec in CONFIG_FIELDS.values()}
if len(CONFIG_FIELDS) != len(FIELDS_BY_PATH):  # a developer error: two leaves share a flat name
    raise RuntimeError("config leaf names must be unique across sections")

#: The fields a resumed run may change (see ``RunOption``); all others must match.
RUN_OPTIONS = tuple(flat for flat, spec in CONFIG_FIELDS.items() if spec.run_option)

#: Leaves the config no longer has, by path, each with where its value went (saved configs
#: that hold one still load; see ``Section.retired_fields``).
RETIRED_FIELDS: dict[tuple[str, ...], str] = {
    (name, leaf): why
    for name, info in TrainConfig.model_fields.items()
    if is_section(info.annotation)
    for leaf, why in info.annotation.retired_fields.items()  # type: ignore[union-attr]
}


def get_field(cfg: TrainConfig, flat: str) -> Any:
    """The value of the leaf ``flat`` of ``cfg``."""
    node: Any = cfg
    for key in CONFIG_FIELDS[flat].path:
        node = getattr(node, key)
    return node
