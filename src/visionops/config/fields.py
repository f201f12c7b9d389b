"""The building blocks of the config schema: the section base class, ``RunOption`` and the
``FieldSpec`` of each leaf (its flat name, flag, type and default).

    >>> from visionops.config import CONFIG_FIELDS
    >>> CONFIG_FIELDS["batch_size"].flag
    '--batch-size'
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import JsonDict

RUN_OPTION = "run_option"  # the json_schema_extra key that marks a run option
URL_CREDENTIALS = "url_credentials"  # ... and the one that marks a URL that may hold a password


class Section(BaseModel):
    """A section of the config tree (``TrainConfig`` is one too)."""

    # Unknown keys are errors (a typo in an overrides file must not pass silently), and
    # assignments are validated so a config never holds a value that would fail at load.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    #: Keys this section no longer has, each with where its value went. The configs saved
    #: before (config.yaml, checkpoints, a sweep's state) still load: the keys are dropped.
    retired_fields: ClassVar[Mapping[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _drop_retired(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(key in data for key in cls.retired_fields):
            return {key: value for key, value in data.items() if key not in cls.retired_fields}
        return data


def RunOption(
    default: Any, description: str, *, url_credentials: bool = False, **constraints: Any
) -> Any:
    """A field that says how this invocation runs, not what the run computes (where it writes,
    how often it logs, which workers load the data): ``--resume`` may change it, and every other
    field must match the saved configuration. Declared here, next to the field, so a new field
    is either one or the other and no list of exceptions has to be kept by hand.

    ``url_credentials``: the value is a URL that may hold a password (``http://user:pw@host``),
    which the saved configuration, MLflow params and error messages show as ``***``."""
    extra: JsonDict = {RUN_OPTION: True}
    if url_credentials:
        extra[URL_CREDENTIALS] = True
    return Field(default, description=description, json_schema_extra=extra, **constraints)


@dataclass(frozen=True)
class FieldSpec:
    """A leaf of the config tree."""

    flat: str
    path: tuple[str, ...]
    annotation: Any
    description: str
    default: Any
    run_option: bool  # see RunOption: --resume may change it
    url_credentials: bool  # see RunOption: a URL whose password is never shown

    @property
    def flag(self) -> str:
        return "--" + self.flat.replace("_", "-")

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.annotation)

    @property
    def choices(self) -> tuple[Any, ...] | None:
        return (
            typing.get_args(self.annotation)
            if typing.get_origin(self.annotation) is Literal
            else None
        )


def is_section(annotation: Any) -> bool:
    """Whether a field of that type is a nested section rather than a leaf."""
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def collect_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[FieldSpec]:
    """The leaves of ``model``, depth first, in declaration order."""
    specs: list[FieldSpec] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if is_section(annotation):
            specs.extend(collect_fields(annotation, (*prefix, name)))  # type: ignore[arg-type]
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        flat = str(extra.get("flat", name))
        specs.append(
            FieldSpec(
                flat,
                (*prefix, name),
                annotation,
                info.description or "",
                info.default,
                run_option=bool(extra.get(RUN_OPTION)),
                url_credentials=bool(extra.get(URL_CREDENTIALS)),
            )
        )
    return specs


def describe_type(annotation: Any) -> str:
    """A short type name for CLI help (``int``, ``str or None``, ``{a,b}``)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return "{" + ",".join(map(str, args)) + "}"
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args if a is not type(None)) + " or None"
    if typing.get_origin(annotation) is tuple:
        return "comma-separated list"
    return getattr(annotation, "__name__", str(annotation))
