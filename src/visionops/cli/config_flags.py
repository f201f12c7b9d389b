"""Flags generated from the config tree, and the config overrides they and ``VISIONOPS_*`` set.

``visionops train`` gets a flag for every config field (``--lr`` for ``optim.lr``); other
commands take the few fields they need (``visionops data cache``: the data source and cache).
A command then turns what was set into overrides, the variables' first, the flags' last::

    args = parser.parse_args(["train", "--lr", "0.1"])
    cfg = resolve_config(TrainConfig(), config_overrides(args))
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping

from visionops.config import CONFIG_FIELDS, FieldSpec, Override, describe_type
from visionops.env import config_env_var, config_overrides_from_env


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every config field, in one argument group per config section."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in CONFIG_FIELDS.values():
        section = spec.path[0] if len(spec.path) > 1 else "training"
        group = groups.setdefault(section, parser.add_argument_group(f"{section} options"))
        add_config_flag(group, spec)


def add_config_flag(
    group: argparse._ArgumentGroup | argparse.ArgumentParser, spec: FieldSpec
) -> None:
    """The flag of one config field, its help naming its variable and its default."""
    default = ",".join(spec.default) if isinstance(spec.default, tuple) else spec.default
    help_text = f"{spec.description} [{config_env_var(spec.flat)}; default: {default}]"
    if spec.annotation is bool:
        group.add_argument(
            spec.flag, dest=spec.flat, action=argparse.BooleanOptionalAction, help=help_text
        )
    else:
        group.add_argument(spec.flag, dest=spec.flat, metavar=_metavar(spec), help=help_text)


def _metavar(spec: FieldSpec) -> str:
    if spec.choices:
        return describe_type(spec.annotation)
    return (
        describe_type(spec.annotation)
        .removesuffix(" or None")
        .replace("comma-separated list", "A,B")
        .upper()
    )


def config_overrides(
    args: argparse.Namespace,
    fields: Iterable[str] = CONFIG_FIELDS,
    environ: Mapping[str, str] | None = None,
) -> list[Override]:
    """The values of config ``fields`` that ``VISIONOPS_<FIELD>`` variables set, then those the
    command line set (a later override wins), each naming where it came from.

    A command's flag counts when its parser stored a value for it: ``train`` suppresses unset
    flags, other commands leave them None.
    """
    fields = list(fields)
    from_env = config_overrides_from_env(fields, environ)
    overrides = [Override(flat, value, config_env_var(flat)) for flat, value in from_env.items()]
    for flat in fields:
        value = getattr(args, flat, None)
        if value is not None:
            overrides.append(Override(flat, value, CONFIG_FIELDS[flat].flag))
    return overrides
