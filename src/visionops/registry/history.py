"""Alias history: MLflow keeps only an alias's current version, so visionops records the moves.

The history of alias ``A`` is a JSON list in the registered-model tag
``visionops.alias_history.A``, oldest first; each entry is one move::

    {"version": "2", "set_at": "2025-01-31T10:00:00+00:00", "by": "alice",
     "reason": "promote", "rolled_back": false}

Rolling back from version V marks every entry of V as rolled back and appends the restored
version, so the holders still in force read like a stack: a second rollback goes further back,
never forward to V. A holder set outside visionops (the MLflow UI, the API) is recorded when
visionops next sees it, with ``by`` "unknown".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from mlflow.tracking import MlflowClient

from visionops import names
from visionops.registry._client import RegistryError

HISTORY_TAG_PREFIX = names.ALIAS_HISTORY_TAG_PREFIX

#: Entries kept; older moves are dropped first.
MAX_ENTRIES = 50
#: MLflow's SQL schema stores registered-model tag values in VARCHAR(5000) (model-version tags
#: are TEXT; the client-side check allows 100,000), so PostgreSQL refuses a longer history.
MAX_TAG_CHARS = 5000

SET_OUTSIDE_VISIONOPS = "found set outside visionops"


@dataclass(frozen=True)
class HistoryEntry:
    version: str
    set_at: str
    by: str
    reason: str
    rolled_back: bool = False


@dataclass
class AliasHistory:
    entries: list[HistoryEntry]

    @classmethod
    def from_tag(cls, value: str | None, tag_key: str = "the alias history") -> AliasHistory:
        if not value:
            return cls([])
        try:
            return cls([HistoryEntry(**entry) for entry in json.loads(value)])
        except (ValueError, TypeError) as exc:
            raise RegistryError(
                f"tag {tag_key} is not a visionops alias history ({exc}); fix or delete it"
            ) from exc

    def to_tag(self) -> str:
        """JSON of the newest entries that fit in one tag value."""
        kept = self.entries[-MAX_ENTRIES:]
        while True:
            text = json.dumps([asdict(entry) for entry in kept], separators=(",", ":"))
            if len(text) <= MAX_TAG_CHARS or len(kept) <= 1:
                return text
            kept = kept[1:]

    def active_holder(self) -> str | None:
        """The holder the history says is in force: the newest entry not rolled back."""
        active = [entry for entry in self.entries if not entry.rolled_back]
        return active[-1].version if active else None

    def observe(self, holder: str | None, at: str) -> None:
        """Record a holder that visionops did not set, so that rollback can leave it."""
        if holder is not None and holder != self.active_holder():
            self.entries.append(HistoryEntry(holder, at, "unknown", SET_OUTSIDE_VISIONOPS))

    def record(self, version: str, at: str, by: str, reason: str) -> None:
        self.entries.append(HistoryEntry(version, at, by, reason))

    def previous_holder(
        self, holder: str, exists: Callable[[str], bool]
    ) -> tuple[str | None, list[str]]:
        """The newest holder in force before ``holder`` that still exists, and the deleted
        versions passed over on the way."""
        skipped: list[str] = []
        for entry in reversed(self.entries):
            if entry.rolled_back or entry.version == holder or entry.version in skipped:
                continue
            if exists(entry.version):
                return entry.version, skipped
            skipped.append(entry.version)
        return None, skipped

    def roll_back(self, holder: str, target: str, at: str, by: str) -> None:
        self.entries = [
            replace(entry, rolled_back=True) if entry.version == holder else entry
            for entry in self.entries
        ]
        self.record(target, at, by, f"rollback from version {holder}")


def history_tag(alias: str) -> str:
    return HISTORY_TAG_PREFIX + alias


def load_history(client: MlflowClient, name: str, alias: str) -> AliasHistory:
    key = history_tag(alias)
    return AliasHistory.from_tag(client.get_registered_model(name).tags.get(key), key)


def save_history(client: MlflowClient, name: str, alias: str, history: AliasHistory) -> None:
    client.set_registered_model_tag(name, history_tag(alias), history.to_tag())
