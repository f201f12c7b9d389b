"""The promotion gate: move an alias only to a version that is as good and fast enough.

``promote(name, version, alias)`` compares the candidate's ``val/accuracy`` (from the run that
logged it) with the current holder's, allowing ``max_accuracy_drop``; it loads the candidate on
the CPU and checks its p95 latency at batch 1 against ``latency_budget_ms``. The decision and its
evidence become tags ``visionops.promotion.<alias>.*`` on the candidate whatever the outcome;
only an approved (or forced) candidate takes the alias, and the move enters the alias history.
Before any of it, the caller's permission to change the model and the candidate's model files
are checked, so neither failure comes after the model was loaded and timed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.registry._client import (
    RegistryError,
    acting_user,
    check_alias,
    current_holder,
    existing_version,
    mlflow_errors,
    registry_client,
    require_model_files,
    require_permission_to_change,
    utc_now,
)
from visionops.registry.history import load_history, save_history
from visionops.registry.latency import LatencyStats, measure_latency
from visionops.registry.policy import PromotionPolicy

PROMOTION_TAG_PREFIX = names.PROMOTION_TAG_PREFIX
VAL_ACCURACY_METRIC = names.VAL_ACCURACY
# Round-off must not reject a candidate exactly at the margin (0.9 - 0.005 != 0.895 in floats).
_ACCURACY_TOLERANCE = 1e-9

Decision = Literal["approved", "rejected", "forced", "unchanged"]


@dataclass(frozen=True)
class PromotionResult:
    model: str
    version: str
    alias: str
    decision: Decision
    """approved, rejected, forced (the gate failed and --force moved the alias anyway) or
    unchanged (the version already held the alias)."""
    reason: str
    policy: PromotionPolicy
    decided_at: str
    decided_by: str
    candidate_accuracy: float | None = None
    incumbent_version: str | None = None
    incumbent_accuracy: float | None = None
    latency: LatencyStats | None = None
    force: bool = False

    @property
    def alias_moved(self) -> bool:
        return self.decision in ("approved", "forced")

    def tags(self) -> dict[str, str]:
        """The decision and its evidence, as tags of the candidate version."""
        latency = self.latency
        fields = {
            "decision": self.decision,
            "reason": self.reason,
            "candidate_version": self.version,
            "candidate_val_accuracy": _text(self.candidate_accuracy),
            "incumbent_version": _text(self.incumbent_version),
            "incumbent_val_accuracy": _text(self.incumbent_accuracy),
            "max_accuracy_drop": str(self.policy.max_accuracy_drop),
            "latency_p50_ms": f"{latency.p50_ms:.3f}" if latency else "none",
            "latency_p95_ms": f"{latency.p95_ms:.3f}" if latency else "none",
            "latency_budget_ms": str(self.policy.latency_budget_ms),
            "latency_runs": str(self.policy.latency_runs),
            "latency_threads": str(latency.num_threads) if latency else "none",
            "force": str(self.force).lower(),
            "decided_at": self.decided_at,
            "decided_by": self.decided_by,
        }
        return {promotion_tag_prefix(self.alias) + key: value for key, value in fields.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "alias": self.alias,
            "decision": self.decision,
            "alias_moved": self.alias_moved,
            "reason": self.reason,
            "candidate": {"version": self.version, "val_accuracy": self.candidate_accuracy},
            "incumbent": {
                "version": self.incumbent_version,
                "val_accuracy": self.incumbent_accuracy,
            },
            "policy": asdict(self.policy),
            "latency": asdict(self.latency) if self.latency else None,
            "force": self.force,
            "decided_at": self.decided_at,
            "decided_by": self.decided_by,
        }


def promotion_tag_prefix(alias: str) -> str:
    """Tags are per alias, so promoting to ``staging`` then ``production`` keeps both records."""
    return f"{PROMOTION_TAG_PREFIX}{alias}."


def promote(
    name: str,
    version: int | str,
    alias: str,
    policy: PromotionPolicy | None = None,
    force: bool = False,
    tracking_uri: str | None = None,
) -> PromotionResult:
    """Run the gate for ``version`` of ``name``, record it, and move ``alias`` if it passes.

    ``force`` moves the alias even when the gate fails or a val/accuracy is missing; the gate is
    still measured, and the override is recorded (decision ``forced``).
    """
    policy = policy or PromotionPolicy()
    version = str(version)
    check_alias(alias)
    client = registry_client(tracking_uri)
    action = f"cannot promote version {version} of {name!r} to {alias!r}"
    with mlflow_errors(action, client.tracking_uri, model=name):
        candidate = existing_version(client, name, version)
        holder = current_holder(client, name, alias)
        unchanged = PromotionResult(
            model=name,
            version=version,
            alias=alias,
            decision="unchanged",
            reason=f"version {version} already holds {alias!r}; nothing to do",
            policy=policy,
            decided_at=utc_now(),
            decided_by=acting_user(),
            force=force,
        )
        if holder == version:
            return unchanged
        # Both before the gate loads and times the model (tens of seconds), in this order: a
        # reader learns about the permission, whatever the files.
        require_permission_to_change(client, candidate)
        require_model_files(client, candidate)

        candidate_accuracy = validation_accuracy(client, candidate)
        incumbent_accuracy = (
            validation_accuracy(client, existing_version(client, name, holder)) if holder else None
        )
        if not force:
            _require_accuracy(name, version, candidate_accuracy, "the candidate")
            if holder is not None:
                _require_accuracy(name, holder, incumbent_accuracy, f"{alias!r}'s holder")
        latency = _measured_latency(f"models:/{name}/{version}", client, policy, force)
        evidence = replace(
            unchanged,
            candidate_accuracy=candidate_accuracy,
            incumbent_version=holder,
            incumbent_accuracy=incumbent_accuracy,
            latency=latency,
            decided_at=utc_now(),
        )
        result = decide(evidence)

        for key, value in result.tags().items():
            client.set_model_version_tag(name, version, key, value)
        if result.alias_moved:
            client.set_registered_model_alias(name, alias, version)
            history = load_history(client, name, alias)
            history.observe(holder, result.decided_at)
            reason = f"promote ({result.decision})"
            history.record(version, result.decided_at, result.decided_by, reason)
            save_history(client, name, alias, history)
    return result


def decide(evidence: PromotionResult) -> PromotionResult:
    """The gate's verdict on measured ``evidence``: approved, rejected or forced."""
    failures = gate_failures(evidence)
    if not failures:
        return replace(evidence, decision="approved", reason=_approval_reason(evidence))
    reason = "; ".join(failures)
    if evidence.force:
        return replace(evidence, decision="forced", reason=f"forced past: {reason}")
    return replace(evidence, decision="rejected", reason=reason)


def validation_accuracy(client: MlflowClient, model_version: ModelVersion) -> float | None:
    """``val/accuracy`` of the run that logged the version, None if there is none."""
    if not model_version.run_id:
        return None
    try:
        run = client.get_run(model_version.run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    value = run.data.metrics.get(VAL_ACCURACY_METRIC)
    return None if value is None else float(value)


def gate_failures(evidence: PromotionResult) -> list[str]:
    """Why the candidate may not take the alias; empty when it may."""
    e, policy = evidence, evidence.policy
    failures = []
    if e.candidate_accuracy is None:
        failures.append(f"version {e.version} has no {VAL_ACCURACY_METRIC}")
    elif e.incumbent_version is not None:
        if e.incumbent_accuracy is None:
            failures.append(
                f"{e.alias!r}'s holder, version {e.incumbent_version}, has no {VAL_ACCURACY_METRIC}"
            )
        elif (
            e.candidate_accuracy
            < e.incumbent_accuracy - policy.max_accuracy_drop - _ACCURACY_TOLERANCE
        ):
            failures.append(
                f"{VAL_ACCURACY_METRIC} {e.candidate_accuracy:.4f} is below version "
                f"{e.incumbent_version}'s {e.incumbent_accuracy:.4f} by more than the allowed "
                f"{policy.max_accuracy_drop:g}"
            )
    if e.latency is None:
        failures.append("its latency could not be measured")
    elif e.latency.p95_ms > policy.latency_budget_ms:
        failures.append(
            f"p95 latency {e.latency.p95_ms:.3f} ms exceeds the "
            f"{policy.latency_budget_ms:g} ms budget"
        )
    return failures


def _approval_reason(e: PromotionResult) -> str:
    assert e.candidate_accuracy is not None and e.latency is not None
    accuracy = (
        f"{VAL_ACCURACY_METRIC} {e.candidate_accuracy:.4f} vs version {e.incumbent_version}'s "
        f"{e.incumbent_accuracy:.4f} (allowed drop {e.policy.max_accuracy_drop:g})"
        if e.incumbent_version is not None and e.incumbent_accuracy is not None
        else f"{e.alias!r} had no holder; {VAL_ACCURACY_METRIC} {e.candidate_accuracy:.4f}"
    )
    return (
        f"{accuracy}; p95 latency {e.latency.p95_ms:.3f} ms within the "
        f"{e.policy.latency_budget_ms:g} ms budget"
    )


def _require_accuracy(name: str, version: str, accuracy: float | None, role: str) -> None:
    if accuracy is None:
        raise RegistryError(
            f"{role}, version {version} of {name!r}, has no {VAL_ACCURACY_METRIC}: its source run "
            "is missing, or did not log it (a final training with val_fraction 0 measures "
            f"{names.split_metric('test', 'accuracy')} only; compare such versions with "
            "`visionops evaluate --split test`), so the gate cannot compare; pass --force to "
            "promote anyway (recorded in the version's tags)"
        )


def _measured_latency(
    model_uri: str, client: MlflowClient, policy: PromotionPolicy, force: bool
) -> LatencyStats | None:
    try:
        return measure_latency(
            model_uri, client.tracking_uri, policy.latency_runs, policy.latency_threads
        )
    except RegistryError:
        if force:  # recorded as a gate failure that --force overrides
            return None
        raise


def _text(value: float | str | None) -> str:
    return "none" if value is None else str(value)
