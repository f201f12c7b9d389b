"""Search spaces: which config fields a sweep varies, and over what.

A space maps flat config field names (``lr``, ``batch_size``, ``model``: the names of
``visionops train`` flags) to Ray Tune sample objects, or to fixed values. Each recipe's space
is registered in ``SEARCH_SPACES`` under the recipe's name (a recipe without one cannot be
swept: there is no silent fallback); a YAML/JSON file overrides it field by field::

    lr: {type: loguniform, low: 0.001, high: 0.5}
    weight_decay: {type: loguniform, low: 1.0e-5, high: 1.0e-2}
    momentum: {type: uniform, low: 0.8, high: 0.95}
    batch_size: {type: choice, values: [64, 128, 256]}
    augmentations: {type: choice, values: ["random_crop,horizontal_flip", "random_crop,cutout"]}
    label_smoothing: 0.1        # a plain value fixes the field for every trial

    >>> from visionops.tuning.space import create_search_space
    >>> sorted(create_search_space("debug"))  # doctest: +SKIP
    ['augmentations', 'batch_size', 'label_smoothing', 'lr', 'momentum', 'weight_decay']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from visionops._registry import Registry
from visionops.config import CONFIG_FIELDS, load_mapping_file
from visionops.errors import ConfigError

SearchSpace = dict[str, Any]
SpaceFactory = Callable[[], SearchSpace]

_CROP_FLIP = "random_crop,horizontal_flip"
_AUGMENTATION_CHOICES = [_CROP_FLIP, f"{_CROP_FLIP},cutout"]


SEARCH_SPACES: Registry[SpaceFactory] = Registry("search space")


def _sgd_space(
    lr: tuple[float, float], batch_sizes: tuple[int, ...], models: tuple[str, ...]
) -> SearchSpace:
    """The generic space of an SGD recipe, over the ranges that suit it."""
    from ray import tune

    space: SearchSpace = {
        "lr": tune.loguniform(*lr),
        "weight_decay": tune.loguniform(1e-5, 1e-2),
        "momentum": tune.uniform(0.8, 0.95),
        "batch_size": tune.choice(list(batch_sizes)),
        "label_smoothing": tune.uniform(0.0, 0.2),
        "augmentations": tune.choice(_AUGMENTATION_CHOICES),
    }
    if len(models) > 1:
        space["model"] = tune.choice(list(models))
    return space


# Every built-in recipe, by name. Small-data recipes get small batches: with a few hundred
# images a batch of 256 is one step.
for _recipe, _lr, _batch_sizes, _models in (
    ("default", (1e-3, 0.5), (64, 128, 256), ("resnet18",)),
    ("debug", (1e-3, 0.3), (16, 32, 64), ("resnet9",)),
    ("quickstart", (1e-2, 0.5), (64, 128, 256), ("resnet9",)),
    ("cifar10-fast", (0.3, 3.0), (512, 1024), ("airbench",)),
    ("cifar10-accurate", (0.3, 3.0), (512, 1024), ("airbench",)),
    ("cifar10-resnet18", (0.02, 0.5), (128, 256), ("resnet18", "resnet9")),
    ("cifar10-mobilenetv3", (0.02, 0.5), (128, 256), ("mobilenet_v3_large",)),
):
    SEARCH_SPACES.register(_recipe, partial(_sgd_space, _lr, _batch_sizes, _models))


def create_search_space(recipe: str, override_file: Path | None = None) -> SearchSpace:
    """The space registered for ``recipe``, then the fields of ``override_file``.

    Raises:
        ConfigError: no space is registered for ``recipe`` (the message lists those that are).
    """
    space = SEARCH_SPACES.get(recipe)()
    if override_file is not None:
        space.update(load_space_file(override_file))
    return space


def load_space_file(path: Path) -> SearchSpace:
    """Read a YAML/JSON search-space file (see the module docstring for the format)."""
    loaded = load_mapping_file(path, "search space file", "config fields to distributions")
    return {field: _domain(field, spec, path) for field, spec in loaded.items()}


_DOMAINS: dict[str, tuple[tuple[str, ...], Callable[..., Any]]] = {}


def _domain_factories() -> dict[str, tuple[tuple[str, ...], Callable[..., Any]]]:
    """Each distribution type: the keys it needs and the Tune function that builds it."""
    if not _DOMAINS:
        from ray import tune

        _DOMAINS.update(
            loguniform=(("low", "high"), tune.loguniform),
            uniform=(("low", "high"), tune.uniform),
            quniform=(("low", "high", "q"), tune.quniform),
            randint=(("low", "high"), tune.randint),
            lograndint=(("low", "high"), tune.lograndint),
            choice=(("values",), tune.choice),
        )
    return _DOMAINS


def _domain(field: str, spec: Any, path: Path) -> Any:
    if field not in CONFIG_FIELDS:
        raise ConfigError(
            f"search space file {path}: unknown config field {field!r}; "
            f"known fields: {', '.join(sorted(CONFIG_FIELDS))}"
        )
    if not isinstance(spec, Mapping):
        return spec  # a fixed value
    factories = _domain_factories()
    kind = spec.get("type")
    if kind not in factories:
        raise ConfigError(
            f"search space file {path}: {field} has type {kind!r}; "
            f"accepted types: {', '.join(factories)}"
        )
    keys, factory = factories[kind]
    unexpected = set(spec) - {"type", *keys}
    missing = [key for key in keys if key not in spec]
    if missing or unexpected:
        raise ConfigError(
            f"search space file {path}: {field} ({kind}) needs exactly the keys "
            f"{', '.join(keys)}; got {', '.join(sorted(set(spec) - {'type'})) or 'none'}"
        )
    if kind == "choice" and not (isinstance(spec["values"], list) and spec["values"]):
        raise ConfigError(f"search space file {path}: {field} (choice) needs a non-empty list")
    return factory(*(spec[key] for key in keys))


def describe_space(space: Mapping[str, Any]) -> dict[str, str]:
    """A readable line per field, for the sweep's MLflow params."""
    from ray.tune.search.sample import Categorical, Domain

    def describe(domain: Any) -> str:
        if isinstance(domain, Categorical):
            return f"choice {domain.domain_str}"
        if isinstance(domain, Domain):
            sampler = type(domain.get_sampler()).__name__.strip("_").lower()
            return f"{sampler} {domain.domain_str}"
        return repr(domain)

    return {field: describe(domain) for field, domain in space.items()}
