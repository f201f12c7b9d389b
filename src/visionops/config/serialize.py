"""The saved configuration: ``config.yaml`` next to a run's checkpoints (and logged to MLflow),
the flattened MLflow params, and the comparison a resume makes with what it is asked to run.

    >>> save_config(cfg, run_dir / "config.yaml")  # doctest: +SKIP
    >>> load_config(run_dir / "config.yaml") == cfg  # doctest: +SKIP
    True

A config saved by an earlier version still loads: the fields it has since lost are dropped
(``Section.retired_fields``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from visionops.config.resolve import with_fields
from visionops.config.schema import CONFIG_FIELDS, TrainConfig, get_field
from visionops.config.urls import redact_url
from visionops.errors import ConfigError


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg`` as plain JSON types (what Ray, Tune and checkpoints carry)."""
    return cfg.model_dump(mode="json")


def redacted(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the passwords in its URLs shown as ``***``: what is saved and logged.

    Only run options hold URLs with passwords, so a resumed run's config still matches; it
    takes the URL from its flag or variable again."""
    changed = {}
    for spec in CONFIG_FIELDS.values():
        value = get_field(cfg, spec.flat)
        if spec.url_credentials and isinstance(value, str) and redact_url(value) != value:
            changed[spec.flat] = redact_url(value)
    return with_fields(cfg, "redaction", **changed) if changed else cfg


def save_config(cfg: TrainConfig, path: Path) -> None:
    """Write ``config.yaml`` (logged to MLflow too): passwords in URLs are redacted."""
    path.write_text(yaml.safe_dump(config_to_dict(redacted(cfg)), sort_keys=False))


def load_config(path: Path) -> TrainConfig:
    """A saved ``config.yaml``, by this version's schema."""
    try:
        return TrainConfig.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"cannot load saved config {path}: {exc}") from exc


def flatten_config(cfg: TrainConfig) -> dict[str, str]:
    """MLflow params: dotted paths (``optim.lr``) to string values, passwords redacted."""
    cfg = redacted(cfg)
    flat: dict[str, str] = {}
    for spec in CONFIG_FIELDS.values():
        value = get_field(cfg, spec.flat)
        if isinstance(value, tuple):
            value = ",".join(map(str, value))
        flat[".".join(spec.path)] = str(value)
    return flat


def config_differences(
    saved: TrainConfig, requested: TrainConfig, ignore: Sequence[str] = ()
) -> list[str]:
    """Human-readable ``field: saved -> requested`` lines for every differing flat field."""
    lines = []
    for flat in CONFIG_FIELDS:
        if flat in ignore:
            continue
        before, after = get_field(saved, flat), get_field(requested, flat)
        if before != after:
            lines.append(f"{flat}: {before!r} -> {after!r}")
    return lines
