"""The model registry: ``create_model(name, num_classes)`` and ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from visionops.errors import ConfigError

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: ModelFactory
    description: str
    supports_width: bool


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, description: str, *, supports_width: bool = False
) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory(num_classes, small_input_stem, width_multiplier)`` under ``name``."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name, factory, description, supports_width)
        return factory

    return decorate


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_specs() -> list[ModelSpec]:
    return [_REGISTRY[name] for name in list_models()]


def create_model(
    name: str,
    num_classes: int,
    *,
    small_input_stem: bool = True,
    width_multiplier: float = 1.0,
) -> nn.Module:
    """Build a freshly initialised network that maps images to ``num_classes`` logits."""
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ConfigError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    if width_multiplier != 1.0 and not spec.supports_width:
        raise ConfigError(
            f"model {name!r} has a fixed width; width_multiplier must be 1.0 "
            f"(models with a width option: "
            f"{', '.join(s.name for s in model_specs() if s.supports_width)})"
        )
    return spec.factory(
        num_classes=num_classes,
        small_input_stem=small_input_stem,
        width_multiplier=width_multiplier,
    )
