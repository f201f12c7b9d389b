"""The model ``visionops optimize`` starts from: a registered version, rebuilt with its data."""

from __future__ import annotations

import re
from pathlib import Path

from visionops import names
from visionops.config import Override, resolve_config
from visionops.data import build_data
from visionops.errors import VisionOpsError
from visionops.optimize.finetune import FinetunePlan, run_finetune
from visionops.optimize.method import OptimizeContext, OptimizeOptions
from visionops.registry._client import (
    RegistryError,
    current_holder,
    existing_version,
    mlflow_errors,
    registry_client,
)
from visionops.training.model_source import load_classifier

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/]+)/(?P<ref>[^/]+)$")


def resolve_version(model_uri: str, tracking_uri: str | None) -> tuple[str, str]:
    """(name, version) of ``models:/NAME/VERSION`` or ``models:/NAME/ALIAS``."""
    match = _MODELS_URI.match(model_uri)
    if not match:
        raise RegistryError(
            f"--model-uri {model_uri!r} must name a registered model: models:/NAME/VERSION or "
            "models:/NAME/ALIAS (the variants become new versions of NAME)"
        )
    name, ref = match["name"], match["ref"]
    client = registry_client(tracking_uri)
    with mlflow_errors(f"cannot find {model_uri}", client.tracking_uri, model=name):
        if ref.isdigit():
            return name, str(existing_version(client, name, ref).version)
        if ref == "latest":
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise RegistryError(f"registered model {name!r} has no versions")
            return name, str(max(int(v.version) for v in versions))
        holder = current_holder(client, name, ref)
        if holder is None:
            raise RegistryError(f"registered model {name!r} has no alias {ref!r}")
        return name, holder


def build_context(
    model_uri: str,
    options: OptimizeOptions,
    workdir: Path,
    tracking_uri: str,
    data_overrides: list[Override] | None = None,
    experiment: str | None = None,
) -> OptimizeContext:
    """Load the source version and its data; the context every method is handed."""
    name, version = resolve_version(model_uri, tracking_uri)
    pinned = f"models:/{name}/{version}"
    source = load_classifier(pinned, tracking_uri)
    base = resolve_config(source.config, data_overrides or [])
    data = build_data(base.data, base.seed)
    if data.num_classes != source.num_classes:
        raise VisionOpsError(
            f"{pinned} predicts {source.num_classes} classes but dataset {base.data.dataset!r} "
            f"has {data.num_classes}; optimise it on data with the classes it was trained on"
        )
    if "val" not in data.split_names:
        raise VisionOpsError(
            f"{pinned} was trained with val_fraction 0 (on every training image), so it has no "
            f"validation split to measure its variants' {names.VAL_ACCURACY} on; optimise a "
            "version trained with val_fraction > 0"
        )
    source.config = base
    plan = FinetunePlan(
        source_uri=pinned,
        base=base,
        epochs=options.finetune_epochs,
        lr_fraction=options.finetune_lr_fraction,
        prune_ratio=options.prune_ratio,
        tracking_uri=tracking_uri,
        experiment=experiment,
        output_dir=workdir / "finetune",
    )
    context = OptimizeContext(
        source=source,
        source_name=name,
        source_version=version,
        data=data,
        seed=base.seed,
        options=options,
        workdir=workdir,
        tracking_uri=tracking_uri,
        parent_run_id=None,
        finetune=lambda method, compression: run_finetune(
            plan, method, compression, context.parent_run_id
        ),
    )
    return context
