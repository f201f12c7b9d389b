"""Checks of a config against the registries, before any data is read or a model built.

The config is a schema and knows no registry; names (dataset, model, augmentations) and the
rules that depend on what a name stands for are checked here, by whoever is about to act on
the config: ``build_job`` first thing, and the CLI before it launches distributed workers.

    >>> from visionops.config import TrainConfig
    >>> from visionops.training.checks import check_names
    >>> check_names(TrainConfig(model={"name": "vgg"}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    visionops.errors.ConfigError: invalid configuration: model='vgg': unknown model 'vgg'; ...
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from visionops.config import TrainConfig, check_field
from visionops.data.datasets import DATASETS
from visionops.data.transforms import AUGMENTATIONS, image_augmentations
from visionops.errors import ConfigError
from visionops.models import MODELS
from visionops.models.compression import COMPRESSIONS


def check_names(cfg: TrainConfig) -> None:
    """Check that ``cfg`` names registered things that can work together.

    Raises:
        ConfigError: naming the field, its value and what is accepted.
    """
    _registered(cfg, "dataset", partial(DATASETS.get, cfg.data.dataset))
    _registered(cfg, "model", partial(MODELS.get, cfg.model.name))
    _registered(
        cfg,
        "width_multiplier",
        lambda: MODELS.get(cfg.model.name).check_width(cfg.model.width_multiplier),
    )
    _registered(cfg, "compression", partial(COMPRESSIONS.get, cfg.model.compression))
    _check_compression_use(cfg)
    for name in cfg.data.augmentations:
        _registered(cfg, "augmentations", partial(AUGMENTATIONS.get, name))
    _check_loader(cfg)


def _registered(cfg: TrainConfig, flat: str, check: Callable[[], object]) -> None:
    """Run a registry's own check and report its ``ConfigError`` as one about ``flat``."""
    try:
        check()
    except ConfigError as exc:
        problem = str(exc)
    else:
        return
    check_field(cfg, flat, False, problem)


def _check_compression_use(cfg: TrainConfig) -> None:
    """A compression whose trained network is not an ordinary model (a QAT graph) cannot be
    logged at the end of the run, nor always compiled: refused now rather than after the
    training, or at its first step."""
    compression = COMPRESSIONS.get(cfg.model.compression)
    check_field(
        cfg,
        "compression",
        compression.loggable or not cfg.tracking.log_model,
        f"a {compression.name} network cannot be logged as a model; use `visionops optimize "
        f"--methods {compression.name}` (it converts and logs the result) or --no-log-model",
    )
    check_field(
        cfg,
        "compile",
        compression.compilable or cfg.compile != "on",
        f"torch.compile cannot compile a {compression.name} network; use --compile auto "
        "(which trains it eagerly) or off",
    )


def _check_loader(cfg: TrainConfig) -> None:
    """Each augmentation runs on the loaders that implement it; the device loader and
    device-only augmentations need decoded images."""
    data = cfg.data
    stages = image_augmentations(data.augmentations)
    per_image_only = [a.name for a in stages if a.batched is None]
    device_only = [a.name for a in stages if a.per_image is None]
    if per_image_only and (device_only or data.loader == "device"):
        check_field(
            cfg,
            "augmentations" if device_only else "loader",
            False,
            f"{', '.join(per_image_only)} run per image on the classic loader only, so they "
            f"cannot be combined with "
            f"{', '.join(device_only) if device_only else 'loader=device'}",
        )
    check_field(
        cfg,
        "loader",
        not (device_only and data.loader == "classic"),
        f"{', '.join(device_only)} need loader=device (or auto)",
    )
    needs_decoded = device_only or data.loader == "device"
    # A generated dataset is born decoded; one read from files is decoded by the cache.
    check_field(
        cfg,
        "cache",
        not (needs_decoded and data.cache == "off" and DATASETS.get(data.dataset).cacheable),
        f"{', '.join(device_only) or 'loader=device'} need the decoded dataset, but cache=off",
    )
