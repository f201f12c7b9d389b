"""Alertmanager's webhook payload, and the one thing an alert may ask of the registry: a rollback.

Alertmanager posts a group of alerts as version 4 of its webhook payload. An alert labelled
``action="rollback"``, ``model_name`` and ``model_version`` asks that the alias leave that
version::

    from visionops.monitoring.alerts import AlertRollback, Notification

    handler = AlertRollback("production", tracking_uri="http://mlflow:5000")
    outcomes = handler.handle(Notification.model_validate_json(body))

Only a firing alert about the alias's current holder moves it, through
``registry.rollback.rollback``, and the alert is recorded on the version it left
(``visionops.rollback.<alias>.alert_*``). Everything else is ignored, with a reason: resolved
alerts, alerts without ``action="rollback"``, versions that do not hold the alias, and repeats.
Alertmanager re-sends a firing alert every ``repeat_interval``; the fingerprint and ``startsAt``
recorded on the version recognise it, so one firing never rolls a version back twice, not even
after the version is promoted again while the alert still fires.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from visionops import names
from visionops.registry._client import (
    RegistryError,
    check_alias,
    mlflow_errors,
    registered_model,
    registry_client,
)
from visionops.registry.rollback import rollback

logger = logging.getLogger(__name__)

#: The longest ``summary`` annotation kept as a tag.
MAX_SUMMARY_CHARS = 500

AlertStatus = Literal["firing", "resolved"]
Action = Literal["rolled_back", "ignored", "failed"]


class Alert(BaseModel):
    """One alert of a notification (Alertmanager's field names are the aliases)."""

    model_config = ConfigDict(populate_by_name=True)

    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: str = Field(alias="startsAt", min_length=1)
    ends_at: str = Field("", alias="endsAt")
    generator_url: str = Field("", alias="generatorURL")
    fingerprint: str = Field(min_length=1, description="Alertmanager's hash of the labels")

    @property
    def name(self) -> str:
        return self.labels.get(names.ALERT_NAME_LABEL, "")


class Notification(BaseModel):
    """Alertmanager's webhook payload, version 4."""

    model_config = ConfigDict(populate_by_name=True)

    version: Literal["4"]
    status: AlertStatus
    alerts: list[Alert]
    group_key: str = Field("", alias="groupKey")
    truncated_alerts: int = Field(0, alias="truncatedAlerts", ge=0)
    receiver: str = ""
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")


@dataclass(frozen=True)
class AlertOutcome:
    """What one alert did: rolled_back, ignored (and why), or failed (the registry refused)."""

    alertname: str
    fingerprint: str
    action: Action
    reason: str
    model: str | None = None
    version: str | None = None
    restored_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AlertRollback:
    """Rolls ``alias`` back for the alerts that ask it.

    Two deliveries of one alert at once (a retry overtaking a slow answer, or the peers of an
    Alertmanager cluster each delivering) must roll back once: a lock per registered model
    serialises them, and under it the second finds that the version no longer holds the alias.
    Alerts about other models, and alerts that ask for nothing, never wait behind it.
    """

    def __init__(self, alias: str = names.PRODUCTION_ALIAS, tracking_uri: str | None = None):
        check_alias(alias)
        self.alias = alias
        self.tracking_uri = tracking_uri
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def handle(
        self, notification: Notification, deadline: float | None = None
    ) -> list[AlertOutcome]:
        """What each alert of ``notification`` did.

        Args:
            deadline: a ``time.monotonic()`` past which no alert starts registry work (it
                fails instead, and Alertmanager retries it), nor waits for another delivery's.
        """
        outcomes = [self._handle_in_time(alert, deadline) for alert in notification.alerts]
        for o in outcomes:
            level = logging.WARNING if o.action == "failed" else logging.INFO
            logger.log(level, "alert %s %s: %s: %s", o.alertname, o.fingerprint, o.action, o.reason)
        return outcomes

    def _handle_in_time(self, alert: Alert, deadline: float | None) -> AlertOutcome:
        reason = _not_a_request(alert)
        if reason is not None:
            return _outcome(alert, "ignored", reason)
        name = alert.labels[names.ALERT_MODEL_NAME_LABEL]
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return _outcome(alert, "failed", "not tried: the tracking server took the time it had")
        lock = self._lock(name)
        if not lock.acquire(timeout=-1 if left is None else left):  # -1: as long as it takes
            reason = (
                f"not tried: another delivery about {name!r} still waits for the tracking server"
            )
            return _outcome(alert, "failed", reason)
        try:
            return self._handle(alert)
        finally:
            lock.release()

    def _lock(self, model: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(model, threading.Lock())

    def _handle(self, alert: Alert) -> AlertOutcome:
        alias = self.alias
        # _handle_in_time checked that both labels are there.
        name = alert.labels[names.ALERT_MODEL_NAME_LABEL]
        version = alert.labels[names.ALERT_MODEL_VERSION_LABEL]

        def outcome(action: Action, reason: str, restored: str | None = None) -> AlertOutcome:
            return _outcome(alert, action, reason, restored)

        client = registry_client(self.tracking_uri)
        try:
            with mlflow_errors(
                f"cannot read {alias!r} of {name!r}", client.tracking_uri, model=name
            ):
                try:
                    holder = registered_model(client, name).aliases.get(alias)
                except RegistryError as missing:  # a rule naming a model that does not exist
                    return outcome("ignored", str(missing))
                holder = None if holder is None else str(holder)
                tags = client.get_model_version(name, version).tags if holder == version else {}
            reason = _not_for_the_holder(alert, alias, version, holder, tags)
            if reason is not None:
                return outcome("ignored", reason)
            result = rollback(name, alias, self.tracking_uri, expected_holder=version)
        except RegistryError as exc:
            return outcome("failed", str(exc))
        reason = f"{alias!r} of {name!r} moved from version {version} to {result.to_version}"
        try:
            with mlflow_errors("cannot record the alert", client.tracking_uri, model=name):
                for key, value in evidence_tags(alert, alias).items():
                    client.set_model_version_tag(name, version, key, value)
        except RegistryError as exc:  # the move is done; only its evidence is missing
            reason = f"{reason}; {exc}"
        return outcome("rolled_back", reason, result.to_version)


def _outcome(
    alert: Alert, action: Action, reason: str, restored: str | None = None
) -> AlertOutcome:
    labels = alert.labels
    name = labels.get(names.ALERT_MODEL_NAME_LABEL)
    version = labels.get(names.ALERT_MODEL_VERSION_LABEL)
    return AlertOutcome(alert.name, alert.fingerprint, action, reason, name, version, restored)


def _not_a_request(alert: Alert) -> str | None:
    """Why ``alert`` asks for no rollback at all, or None."""
    if alert.labels.get(names.ALERT_ACTION_LABEL) != names.ALERT_ACTION_ROLLBACK:
        return f'not labelled {names.ALERT_ACTION_LABEL}="{names.ALERT_ACTION_ROLLBACK}"'
    if alert.status != "firing":
        return "resolved: a resolved alert changes nothing"
    missing = [
        label
        for label in (names.ALERT_MODEL_NAME_LABEL, names.ALERT_MODEL_VERSION_LABEL)
        if not alert.labels.get(label)
    ]
    if missing:
        return f"no {' or '.join(missing)} label: the alert names no version to roll back"
    return None


def _not_for_the_holder(
    alert: Alert, alias: str, version: str, holder: str | None, recorded: Mapping[str, str]
) -> str | None:
    """Why the alert about ``version`` must leave ``alias`` (held by ``holder``) where it is."""
    if holder != version:
        now = f"version {holder} does" if holder else "no version does"
        return f"version {version} does not hold {alias!r} ({now}); nothing to roll back"
    if already_recorded(alert, alias, recorded):
        return (
            f"this alert (fingerprint {alert.fingerprint}, firing since {alert.starts_at}) "
            f"already rolled version {version} back; it holds {alias!r} again since"
        )
    return None


def evidence_tags(alert: Alert, alias: str) -> dict[str, str]:
    """The alert as tags of the version it rolled back."""
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    fields = {
        names.ROLLBACK_ALERT_NAME_FIELD: alert.name or "none",
        names.ROLLBACK_ALERT_FINGERPRINT_FIELD: alert.fingerprint,
        names.ROLLBACK_ALERT_STARTS_AT_FIELD: alert.starts_at,
        names.ROLLBACK_ALERT_SUMMARY_FIELD: summary[:MAX_SUMMARY_CHARS] or "none",
        names.ROLLBACK_ALERT_URL_FIELD: alert.generator_url or "none",
    }
    return {names.rollback_tag(alias, field): value for field, value in fields.items()}


def already_recorded(alert: Alert, alias: str, tags: Mapping[str, str]) -> bool:
    """Whether ``tags`` of a version record this firing of ``alert`` rolling it back."""
    fingerprint = tags.get(names.rollback_tag(alias, names.ROLLBACK_ALERT_FINGERPRINT_FIELD))
    starts_at = tags.get(names.rollback_tag(alias, names.ROLLBACK_ALERT_STARTS_AT_FIELD))
    return fingerprint == alert.fingerprint and starts_at == alert.starts_at
