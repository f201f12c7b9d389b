"""The typed configuration tree, its validation and its resolution from layered sources.

One ``TrainConfig`` composes small sections. Every leaf field has a unique *flat name*
(``lr``, ``batch_size``, ``model``) that is both its CLI flag (``--batch-size``) and its
environment variable (``VISIONOPS_BATCH_SIZE``). Resolution order, last wins::

    defaults < recipe < overrides file < VISIONOPS_* environment < CLI flags

    >>> from visionops.config import TrainConfig, Override, resolve_config
    >>> cfg = resolve_config(TrainConfig(), [Override("epochs", "3", "--epochs")])
    >>> cfg.epochs
    3

The modules, from the ground up (each imports only those before it):

    fields.py     the section base class, RunOption, FieldSpec (a leaf's flat name and flag)
    urls.py       URLs that may hold a password, shown as ***
    sections.py   DataConfig, ModelConfig, OptimConfig, DistillConfig, TrackingConfig,
                  CheckpointConfig; the warm-up a run of N epochs gets
    schema.py     TrainConfig, its cross-field rules, CONFIG_FIELDS and RUN_OPTIONS
    resolve.py    Override and resolve_config: recipe < file < environment < flags
    serialize.py  config.yaml, the MLflow params, what a resume compares

Which run to resume is not configuration: it is ``train(cfg, resume=...)``'s argument.
Nothing here imports torch, nor the data and model layers.
"""

from visionops.config.fields import RUN_OPTION, URL_CREDENTIALS, FieldSpec, RunOption, describe_type
from visionops.config.resolve import (
    Override,
    check_field,
    load_mapping_file,
    model_from_flags,
    overrides_from_file,
    overrides_from_mapping,
    resolve_config,
    with_fields,
    with_run_options,
)
from visionops.config.schema import (
    CONFIG_FIELDS,
    RETIRED_FIELDS,
    RUN_OPTIONS,
    FieldConflict,
    TrainConfig,
    get_field,
)
from visionops.config.sections import (
    DEFAULT_WARMUP_FRACTION,
    MAX_DEFAULT_WARMUP_EPOCHS,
    CheckpointConfig,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    TrackingConfig,
    warmup_epochs_for,
)
from visionops.config.serialize import (
    config_differences,
    config_to_dict,
    flatten_config,
    load_config,
    redacted,
    save_config,
)
from visionops.config.urls import REDACTED, redact_url, split_url_credentials

__all__ = [
    "CONFIG_FIELDS",
    "DEFAULT_WARMUP_FRACTION",
    "MAX_DEFAULT_WARMUP_EPOCHS",
    "REDACTED",
    "RETIRED_FIELDS",
    "RUN_OPTION",
    "RUN_OPTIONS",
    "URL_CREDENTIALS",
    "CheckpointConfig",
    "DataConfig",
    "DistillConfig",
    "FieldConflict",
    "FieldSpec",
    "ModelConfig",
    "OptimConfig",
    "Override",
    "RunOption",
    "TrackingConfig",
    "TrainConfig",
    "check_field",
    "config_differences",
    "config_to_dict",
    "describe_type",
    "flatten_config",
    "get_field",
    "load_config",
    "load_mapping_file",
    "model_from_flags",
    "overrides_from_file",
    "overrides_from_mapping",
    "redact_url",
    "redacted",
    "resolve_config",
    "save_config",
    "split_url_credentials",
    "warmup_epochs_for",
    "with_fields",
    "with_run_options",
]
