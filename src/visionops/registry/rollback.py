"""Move an alias back to its previous holder, as recorded in the alias history.

``rollback(name, alias)`` leaves the current holder V for the newest version in the history
that held the alias before V, is not itself rolled back, and still exists (deleted versions are
passed over). Every entry of V is marked rolled back, so a second rollback goes further back
and never returns to V; with no such version left it is an error, and the alias stays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from visionops import names
from visionops.registry._client import (
    RegistryError,
    acting_user,
    check_alias,
    current_holder,
    mlflow_errors,
    registry_client,
    utc_now,
    version_exists,
)
from visionops.registry.history import load_history, save_history

ROLLBACK_TAG_PREFIX = names.ROLLBACK_TAG_PREFIX


@dataclass(frozen=True)
class RollbackResult:
    model: str
    alias: str
    from_version: str
    to_version: str
    rolled_back_at: str
    rolled_back_by: str
    skipped_versions: list[str] = field(default_factory=list)
    """Earlier holders passed over because they were deleted."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollback(
    name: str, alias: str, tracking_uri: str | None = None, *, expected_holder: str | None = None
) -> RollbackResult:
    """Point ``alias`` of ``name`` at its previous holder; record the move in history and tags.

    ``expected_holder`` rolls back only from that version: an error, and the alias stays, when
    it has moved to another since the caller looked (an alert about version 3 must not roll
    back version 4, promoted meanwhile).
    """
    check_alias(alias)
    client = registry_client(tracking_uri)
    with mlflow_errors(f"cannot roll back {alias!r} of {name!r}", client.tracking_uri, model=name):
        holder = current_holder(client, name, alias)
        if holder is None:
            raise RegistryError(
                f"alias {alias!r} of model {name!r} points to no version; nothing to roll back "
                "(promote a version instead)"
            )
        if expected_holder is not None and holder != expected_holder:
            raise RegistryError(
                f"alias {alias!r} of model {name!r} points to version {holder}, not "
                f"{expected_holder}; nothing was rolled back"
            )
        at, by = utc_now(), acting_user()
        history = load_history(client, name, alias)
        history.observe(holder, at)
        target, skipped = history.previous_holder(
            holder, lambda version: version_exists(client, name, version)
        )
        if target is None:
            raise RegistryError(
                f"alias {alias!r} of model {name!r} has no previous holder to roll back to "
                f"from version {holder}: the history holds no earlier version that is neither "
                "rolled back nor deleted"
            )
        client.set_registered_model_alias(name, alias, target)
        history.roll_back(holder, target, at, by)
        save_history(client, name, alias, history)

        for key, value in {"demoted_at": at, "demoted_by": by, "replaced_by": target}.items():
            client.set_model_version_tag(name, holder, names.rollback_tag(alias, key), value)
        for key, value in {"restored_at": at, "restored_by": by, "replaced": holder}.items():
            client.set_model_version_tag(name, target, names.rollback_tag(alias, key), value)
    return RollbackResult(name, alias, holder, target, at, by, skipped)
