"""Layered resolution: a base config (a recipe, or a saved run's) and overrides on top.

Resolution order, last wins::

    defaults < recipe < overrides file < VISIONOPS_* environment < CLI flags

    >>> from visionops.config import TrainConfig, Override, resolve_config
    >>> cfg = resolve_config(TrainConfig(), [Override("epochs", "3", "--epochs")])
    >>> cfg.epochs
    3
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from visionops.config.fields import is_section
from visionops.config.schema import (
    CONFIG_FIELDS,
    FIELDS_BY_PATH,
    RETIRED_FIELDS,
    RUN_OPTIONS,
    FieldConflict,
    TrainConfig,
    get_field,
)
from visionops.config.urls import redact_url
from visionops.errors import ConfigError

_NONE_STRINGS = {"", "none", "null"}
#: Retired leaves by every name a mapping may give them: flat (``resume``) or dotted.
_RETIRED_NAMES = {
    name: why for path, why in RETIRED_FIELDS.items() for name in (path[-1], ".".join(path))
}


@dataclass(frozen=True)
class Override:
    """One value from one source (``--lr``, ``VISIONOPS_LR``, an overrides file)."""

    field: str
    value: Any
    source: str


def overrides_from_mapping(values: Mapping[str, Any], source: str) -> list[Override]:
    """Overrides from a flat ``{field: value}`` mapping; unknown fields are errors."""
    overrides = []
    for flat, value in values.items():
        if flat in _RETIRED_NAMES:
            raise ConfigError(
                f"{flat} (from {source}) is no longer a config field: {_RETIRED_NAMES[flat]}"
            )
        if flat not in CONFIG_FIELDS:
            raise ConfigError(
                f"unknown config field {flat!r} (from {source}); "
                f"known fields: {', '.join(sorted(CONFIG_FIELDS))}"
            )
        overrides.append(Override(flat, value, source))
    return overrides


def load_mapping_file(path: Path, what: str, expected: str) -> dict[str, Any]:
    """A YAML/JSON file that must hold a mapping; ``what`` and ``expected`` word the errors."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of {expected}")
    return loaded


def overrides_from_file(path: Path) -> list[Override]:
    """Overrides from a YAML/JSON file, nested by section (as in ``config.yaml``) or flat.

    A retired field left empty (``resume: null``, as in a ``config.yaml`` saved by an earlier
    version) is skipped; one with a value is refused, saying where its value goes now."""
    loaded = load_mapping_file(path, "config file", "fields to values")
    flat: dict[str, Any] = {}
    for key, value in loaded.items():
        section = TrainConfig.model_fields.get(key)
        if section is not None and is_section(section.annotation) and isinstance(value, dict):
            for leaf, leaf_value in value.items():
                spec = FIELDS_BY_PATH.get((key, leaf))
                flat[spec.flat if spec else f"{key}.{leaf}"] = leaf_value
        else:
            flat[key] = value
    kept = {name: value for name, value in flat.items() if name not in _RETIRED_NAMES or value}
    return overrides_from_mapping(kept, f"config file {path}")


def resolve_config(
    base: TrainConfig,
    overrides: Iterable[Override],
    base_source: str = "the base configuration",
) -> TrainConfig:
    """Apply overrides in order (later wins) to ``base`` and validate the result.

    ``base_source`` says where a value no override sets came from, in errors about fields
    that do not fit together (``warmup_epochs`` and ``epochs``).

    Raises:
        ConfigError: naming the field, the offending value, where it came from and what is
            accepted.
    """
    tree = base.model_dump()
    sources: dict[tuple[str, ...], Override] = {}
    for override in overrides:
        spec = CONFIG_FIELDS[override.field]
        value = override.value
        if spec.optional and isinstance(value, str) and value.strip().lower() in _NONE_STRINGS:
            value = None
        node = tree
        for key in spec.path[:-1]:
            node = node[key]
        node[spec.path[-1]] = value
        sources[spec.path] = override
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, sources, base_source)) from None


def _describe_validation_error(
    exc: ValidationError, sources: Mapping[tuple[str, ...], Override], base_source: str
) -> str:
    problems = []
    for error in exc.errors():
        path = tuple(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        spec = FIELDS_BY_PATH.get(path)
        if spec is None:  # a cross-field rule: the message names its fields
            conflict = error.get("ctx", {}).get("error")
            if isinstance(conflict, FieldConflict):
                message = conflict.describe(_origins(conflict, sources, base_source))
            problems.append(message)
            continue
        origin = sources.get(path)
        where = f" (from {origin.source})" if origin else ""
        value = error.get("input")
        if spec.url_credentials and isinstance(value, str):
            value = redact_url(value)
        shown = value if isinstance(value, str) and value.strip() else repr(value)
        problems.append(f"{spec.flat}={shown}{where}: {message}")
    return "invalid configuration: " + "; ".join(problems)


def _origins(
    conflict: FieldConflict, sources: Mapping[tuple[str, ...], Override], base_source: str
) -> dict[str, str]:
    """Where each of the conflicting fields got its value."""
    origins = {}
    for flat in conflict.values:
        override = sources.get(CONFIG_FIELDS[flat].path)
        origins[flat] = override.source if override else base_source
    return origins


_Options = typing.TypeVar("_Options", bound=BaseModel)


def model_from_flags(schema: type[_Options], values: Mapping[str, Any]) -> _Options:
    """``schema`` validated from a command's flags (keys: field names, ``--field-name`` on the
    command line), so that a flag's range lives in the schema alone (``Field(ge=1)``).

    Raises:
        ConfigError: one sentence naming the first bad flag, its value and what is accepted.
    """
    try:
        return schema.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        if not first["loc"]:
            raise ConfigError(f"invalid options: {message}") from None
        field = str(first["loc"][0])
        value = values.get(field, first.get("input"))
        shown = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        shown = shown if shown.strip() else repr(shown)
        raise ConfigError(f"--{field.replace('_', '-')} {shown}: {message}") from None


def check_field(cfg: TrainConfig, flat: str, condition: bool, message: str) -> None:
    """Raise a ``ConfigError`` about ``flat`` unless ``condition`` holds (data-dependent checks)."""
    if not condition:
        value = get_field(cfg, flat)
        raise ConfigError(f"invalid configuration: {flat}={value!r}: {message}")


def with_fields(cfg: TrainConfig, source: str = "code", **values: Any) -> TrainConfig:
    """A validated copy of ``cfg`` with the given flat fields replaced (``source`` names where
    the values come from in errors)."""
    return resolve_config(cfg, overrides_from_mapping(values, source))


def with_run_options(cfg: TrainConfig, **values: Any) -> TrainConfig:
    """``cfg`` with run options replaced (where to write and log, the run to nest under).

    The launchers, tuners and restarts that set them cannot change what the run computes:
    a field that is not a run option is refused. Which run to resume is no field at all: it
    is ``train``'s ``resume`` argument.
    """
    computed = [flat for flat in values if flat in CONFIG_FIELDS and flat not in RUN_OPTIONS]
    if computed:
        raise ValueError(f"{', '.join(computed)} change what a run computes: not run options")
    return with_fields(cfg, **values)
