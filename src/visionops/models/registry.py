"""The model registry: ``create_model(name, num_classes)`` and ``list_models()``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from visionops._registry import Registry
from visionops.errors import ConfigError

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: ModelFactory
    description: str
    supports_width: bool

    def check_width(self, width_multiplier: float) -> None:
        """Raise a ``ConfigError`` unless this model can be built ``width_multiplier`` wide."""
        if width_multiplier != 1.0 and not self.supports_width:
            raise ConfigError(
                f"model {self.name!r} has a fixed width; width_multiplier must be 1.0 "
                f"(models with a width option: "
                f"{', '.join(s.name for s in MODELS.entries() if s.supports_width)})"
            )


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(
    name: str, description: str, *, supports_width: bool = False
) -> Callable[[ModelFactory], ModelFactory]:
    """Register ``factory(num_classes, small_input_stem, width_multiplier)`` under ``name``."""

    def decorate(factory: ModelFactory) -> ModelFactory:
        MODELS.register(name, ModelSpec(name, factory, description, supports_width))
        return factory

    return decorate


def list_models() -> list[str]:
    return MODELS.names()


def model_specs() -> list[ModelSpec]:
    return MODELS.entries()


def create_model(
    name: str,
    num_classes: int,
    *,
    small_input_stem: bool = True,
    width_multiplier: float = 1.0,
) -> nn.Module:
    """Build a freshly initialised network that maps images to ``num_classes`` logits."""
    spec = MODELS.get(name)
    spec.check_width(width_multiplier)
    return spec.factory(
        num_classes=num_classes,
        small_input_stem=small_input_stem,
        width_multiplier=width_multiplier,
    )
