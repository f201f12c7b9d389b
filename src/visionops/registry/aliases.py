"""Read and set the aliases of a registered model (``visionops alias show|set``).

``set_alias`` is for the aliases no gate guards (``candidate``, ``staging``): it points the
alias at an existing version and records the move in the alias history, so ``visionops
rollback`` can undo it. ``production`` moves only through ``promote`` (the gate) or
``rollback``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from visionops import names
from visionops.registry._client import (
    RegistryError,
    acting_user,
    check_alias,
    current_holder,
    existing_version,
    mlflow_errors,
    registered_model,
    registry_client,
    require_model_files,
    utc_now,
)
from visionops.registry.history import load_history, save_history

#: Aliases ``set_alias`` refuses: the gate decides who holds them.
GATED_ALIASES = (names.PRODUCTION_ALIAS,)


@dataclass(frozen=True)
class AliasMove:
    model: str
    alias: str
    version: str
    previous_version: str | None
    set_at: str
    set_by: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_aliases(name: str, tracking_uri: str | None = None) -> dict[str, str]:
    """Every alias of ``name`` and the version it points to, sorted by alias."""
    client = registry_client(tracking_uri)
    with mlflow_errors(f"cannot read the aliases of {name!r}", client.tracking_uri, model=name):
        aliases = registered_model(client, name).aliases
    return {alias: str(version) for alias, version in sorted(aliases.items())}


def set_alias(
    name: str, alias: str, version: int | str, tracking_uri: str | None = None
) -> AliasMove:
    """Point ``alias`` of ``name`` at ``version`` (which must exist, be READY and have its
    model files)."""
    check_alias(alias)
    if alias in GATED_ALIASES:
        raise RegistryError(
            f"{alias!r} moves through the promotion gate: use `visionops promote --alias "
            f"{alias}` (--force to override it, recorded) or `visionops rollback`"
        )
    version = str(version)
    client = registry_client(tracking_uri)
    with mlflow_errors(f"cannot set {alias!r} of {name!r}", client.tracking_uri, model=name):
        require_model_files(client, existing_version(client, name, version))
        previous = current_holder(client, name, alias)
        at, by = utc_now(), acting_user()
        history = load_history(client, name, alias)
        history.observe(previous, at)
        history.record(version, at, by, reason="alias set")
        client.set_registered_model_alias(name, alias, version)
        save_history(client, name, alias, history)
    return AliasMove(name, alias, version, previous, at, by)
