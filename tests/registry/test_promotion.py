"""The promotion gate, alias history and rollback against a real (sqlite) MLflow registry.

One tiny model is trained once; the other versions re-register that model under runs whose
``val/accuracy`` each test chooses, so a test sets up its registry in a fraction of a second.
Budgets are generous where a test expects approval, so no assertion depends on the machine's
speed; the over-budget test asks for 0.001 ms, which no forward pass meets.
"""

from __future__ import annotations

import getpass
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.cli import main
from visionops.config import with_fields
from visionops.recipes import get_recipe
from visionops.registry._client import RegistryError
from visionops.registry.history import (
    MAX_ENTRIES,
    MAX_TAG_CHARS,
    SET_OUTSIDE_VISIONOPS,
    AliasHistory,
    HistoryEntry,
)
from visionops.registry.policy import PromotionPolicy
from visionops.registry.promotion import promote
from visionops.registry.rollback import rollback
from visionops.tracking.client import process_tracking_uri

TRAINED_MODEL = "vision-classifier"
ALIAS = "production"
# Approval must not depend on how busy the machine is: a budget no forward pass exceeds.
FAST = PromotionPolicy(latency_budget_ms=10_000.0, latency_runs=3)
PROMOTION = "visionops.promotion.production."
ROLLBACK = "visionops.rollback.production."
HISTORY = "visionops.alias_history.production"


@dataclass(frozen=True)
class Store:
    uri: str
    source: str  # the trained model, registered again for every synthetic version
    experiment_id: str
    val_accuracy: float  # what training logged as val/accuracy

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def add_version(self, name: str, val_accuracy: float | None, source: str | None = None) -> str:
        """A new version of ``name`` whose source run logged ``val_accuracy`` (None: nothing),
        of the trained model unless ``source`` names another."""
        client = self.client
        run_id = client.create_run(self.experiment_id).info.run_id
        if val_accuracy is not None:
            client.log_metric(run_id, names.VAL_ACCURACY, val_accuracy)
        client.set_terminated(run_id)
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name)
        # MLflow resolves a models:/ source through the process's tracking URI alone.
        with process_tracking_uri(self.uri):
            version = client.create_model_version(name, source or self.source, run_id=run_id)
            return str(version.version)

    def aliases(self, name: str) -> dict[str, str]:
        return {a: str(v) for a, v in self.client.get_registered_model(name).aliases.items()}

    def tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self.client.get_model_version(name, version).tags)

    def history(self, name: str) -> list[dict[str, object]]:
        value = self.client.get_registered_model(name).tags.get(HISTORY)
        return json.loads(value) if value else []


@pytest.fixture(scope="module")
def store(
    new_tracking_store: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Store:
    root = tmp_path_factory.mktemp("registry")
    uri = new_tracking_store(root, "mlflow.db")
    cfg = with_fields(
        get_recipe("debug"),
        tracking_uri=uri,
        output_dir=str(root / "outputs"),
        experiment="tests",
        register_as=TRAINED_MODEL,
    )
    from visionops.training import train

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # MLflow's default artifact root is relative to the working folder
        result = train(cfg)
    assert result.registered_version == 1
    version = MlflowClient(uri).get_model_version(TRAINED_MODEL, "1")
    experiment = MlflowClient(uri).get_experiment_by_name("tests")
    assert experiment is not None
    return Store(uri, version.source, experiment.experiment_id, result.metrics[names.VAL_ACCURACY])


@pytest.fixture
def name() -> str:
    """A registered model of the test's own in the shared store."""
    return f"clf-{uuid.uuid4().hex[:8]}"


def test_first_promotion_has_no_incumbent_and_records_its_evidence(store: Store) -> None:
    result = promote(TRAINED_MODEL, 1, ALIAS, FAST, tracking_uri=store.uri)

    assert result.decision == "approved"
    assert store.aliases(TRAINED_MODEL) == {ALIAS: "1"}
    tags = store.tags(TRAINED_MODEL, "1")
    # The accuracy is the one the training run logged as val/accuracy.
    assert float(tags[PROMOTION + "candidate_val_accuracy"]) == store.val_accuracy
    assert tags[PROMOTION + "decision"] == "approved"
    assert tags[PROMOTION + "incumbent_version"] == "none"
    assert tags[PROMOTION + "incumbent_val_accuracy"] == "none"
    assert float(tags[PROMOTION + "latency_p95_ms"]) >= float(tags[PROMOTION + "latency_p50_ms"])
    assert float(tags[PROMOTION + "latency_p50_ms"]) > 0
    assert tags[PROMOTION + "latency_budget_ms"] == "10000.0"
    assert tags[PROMOTION + "latency_runs"] == "3"
    assert tags[PROMOTION + "max_accuracy_drop"] == "0.0"
    assert tags[PROMOTION + "force"] == "false"
    assert tags[PROMOTION + "decided_by"] == getpass.getuser()
    assert result.latency is not None and result.latency.input_shape == (1, 3, 32, 32)
    [entry] = store.history(TRAINED_MODEL)
    assert entry["version"] == "1" and entry["reason"] == "promote (approved)"
    assert entry["set_at"] == tags[PROMOTION + "decided_at"]

    # Promoting the holder again changes nothing.
    again = promote(TRAINED_MODEL, 1, ALIAS, FAST, tracking_uri=store.uri)
    assert again.decision == "unchanged"
    assert store.tags(TRAINED_MODEL, "1") == tags
    assert len(store.history(TRAINED_MODEL)) == 1


def test_worse_candidate_is_rejected_with_tags_and_the_alias_stays(store: Store, name) -> None:
    first, worse = store.add_version(name, 0.80), store.add_version(name, 0.70)
    promote(name, first, ALIAS, FAST, tracking_uri=store.uri)

    result = promote(name, worse, ALIAS, FAST, tracking_uri=store.uri)

    assert result.decision == "rejected" and not result.alias_moved
    assert "val/accuracy 0.7000 is below version 1's 0.8000" in result.reason
    assert store.aliases(name) == {ALIAS: first}
    tags = store.tags(name, worse)
    assert tags[PROMOTION + "decision"] == "rejected"
    assert tags[PROMOTION + "reason"] == result.reason
    assert tags[PROMOTION + "incumbent_version"] == first
    assert tags[PROMOTION + "incumbent_val_accuracy"] == "0.8"
    assert tags[PROMOTION + "candidate_val_accuracy"] == "0.7"
    assert [e["version"] for e in store.history(name)] == [first]


def test_candidate_within_the_allowed_drop_is_approved(store: Store, name) -> None:
    first, close = store.add_version(name, 0.800), store.add_version(name, 0.795)
    promote(name, first, ALIAS, FAST, tracking_uri=store.uri)

    strict = PromotionPolicy(max_accuracy_drop=0.004, latency_budget_ms=10_000.0, latency_runs=3)
    assert promote(name, close, ALIAS, strict, tracking_uri=store.uri).decision == "rejected"
    assert store.aliases(name) == {ALIAS: first}

    # Exactly at the margin: 0.795 >= 0.800 - 0.005 despite float round-off.
    margin = PromotionPolicy(max_accuracy_drop=0.005, latency_budget_ms=10_000.0, latency_runs=3)
    result = promote(name, close, ALIAS, margin, tracking_uri=store.uri)
    assert result.decision == "approved"
    assert store.aliases(name) == {ALIAS: close}
    tags = store.tags(name, close)
    assert tags[PROMOTION + "decision"] == "approved"  # the rejection's tags are replaced
    assert tags[PROMOTION + "max_accuracy_drop"] == "0.005"
    assert [e["version"] for e in store.history(name)] == [first, close]


def test_candidate_over_the_latency_budget_is_rejected(store: Store, name) -> None:
    version = store.add_version(name, 0.9)
    tiny_budget = PromotionPolicy(latency_budget_ms=0.001, latency_runs=3)

    result = promote(name, version, ALIAS, tiny_budget, tracking_uri=store.uri)

    assert result.decision == "rejected"
    assert result.reason.endswith("exceeds the 0.001 ms budget")
    assert store.aliases(name) == {}
    tags = store.tags(name, version)
    assert tags[PROMOTION + "decision"] == "rejected"
    assert float(tags[PROMOTION + "latency_p95_ms"]) > 0.001
    assert store.history(name) == []


def test_a_version_without_val_accuracy_needs_force_which_is_recorded(store: Store, name) -> None:
    version = store.add_version(name, None)
    # The error names the case of a final training on every image and what compares it.
    with pytest.raises(RegistryError, match=r"has no val/accuracy.*val_fraction 0.*--force"):
        promote(name, version, ALIAS, FAST, tracking_uri=store.uri)
    assert store.aliases(name) == {}
    assert not any(key.startswith("visionops.") for key in store.tags(name, version))

    result = promote(name, version, ALIAS, FAST, force=True, tracking_uri=store.uri)

    assert result.decision == "forced"
    assert store.aliases(name) == {ALIAS: version}
    tags = store.tags(name, version)
    assert tags[PROMOTION + "decision"] == "forced"
    assert tags[PROMOTION + "force"] == "true"
    assert tags[PROMOTION + "reason"] == f"forced past: version {version} has no val/accuracy"
    assert float(tags[PROMOTION + "latency_p95_ms"]) > 0  # the gate was still measured
    assert store.history(name)[-1]["reason"] == "promote (forced)"


def test_a_version_whose_model_files_are_gone_takes_no_alias_even_forced(
    store: Store, name, tmp_path
) -> None:
    holder = store.add_version(name, 0.80)
    assert promote(name, holder, ALIAS, FAST, tracking_uri=store.uri).alias_moved
    emptied = tmp_path / "emptied"
    emptied.mkdir()
    version = store.add_version(name, 0.90, source=str(emptied))
    for force in (False, True):
        with pytest.raises(RegistryError) as refused:
            promote(name, version, ALIAS, FAST, force=force, tracking_uri=store.uri)
        assert str(refused.value) == (
            f"version {version} of {name!r} has no model files: no MLmodel at {emptied} in the "
            f"artifact store of {store.uri} (lost, e.g. with a local S3 that restarted, or never "
            "uploaded); register the model again"
        )
    assert store.aliases(name) == {ALIAS: holder}
    assert not any(key.startswith("visionops.") for key in store.tags(name, version))


def test_bad_requests_fail_before_anything_is_written(store: Store, name) -> None:
    version = store.add_version(name, 0.5)
    with pytest.raises(RegistryError, match="has no version 7"):
        promote(name, 7, ALIAS, FAST, tracking_uri=store.uri)
    with pytest.raises(RegistryError, match="invalid alias 'latest'"):
        promote(name, version, "latest", FAST, tracking_uri=store.uri)
    with pytest.raises(RegistryError, match="no registered model is named 'no-such-model'"):
        promote("no-such-model", 1, ALIAS, FAST, tracking_uri=store.uri)
    assert store.tags(name, version) == {}


def test_rollback_walks_back_once_per_holder_and_never_forward(store: Store, name) -> None:
    v1, v2, v3 = (store.add_version(name, accuracy) for accuracy in (0.80, 0.85, 0.90))
    for version in (v1, v2, v3):
        assert promote(name, version, ALIAS, FAST, tracking_uri=store.uri).alias_moved

    first = rollback(name, ALIAS, tracking_uri=store.uri)
    assert (first.from_version, first.to_version) == (v3, v2)
    assert store.aliases(name) == {ALIAS: v2}
    demoted, restored = store.tags(name, v3), store.tags(name, v2)
    assert demoted[ROLLBACK + "replaced_by"] == v2
    assert demoted[ROLLBACK + "demoted_at"] == first.rolled_back_at
    assert demoted[ROLLBACK + "demoted_by"] == getpass.getuser()
    assert restored[ROLLBACK + "replaced"] == v3
    assert restored[ROLLBACK + "restored_at"] == first.rolled_back_at

    assert rollback(name, ALIAS, tracking_uri=store.uri).to_version == v1
    with pytest.raises(RegistryError, match="no previous holder"):
        rollback(name, ALIAS, tracking_uri=store.uri)
    assert store.aliases(name) == {ALIAS: v1}

    history = store.history(name)
    assert [(e["version"], e["rolled_back"]) for e in history] == [
        (v1, False),
        (v2, True),
        (v3, True),
        (v2, True),
        (v1, False),
    ]
    assert [e["reason"] for e in history[3:]] == [
        f"rollback from version {v3}",
        f"rollback from version {v2}",
    ]

    # A version promoted after a rollback is rolled back to the holder before it.
    v4 = store.add_version(name, 0.95)
    promote(name, v4, ALIAS, FAST, tracking_uri=store.uri)
    assert rollback(name, ALIAS, tracking_uri=store.uri).to_version == v1


def test_rollback_skips_deleted_versions(store: Store, name) -> None:
    v1, v2, v3 = (store.add_version(name, accuracy) for accuracy in (0.80, 0.85, 0.90))
    for version in (v1, v2, v3):
        promote(name, version, ALIAS, FAST, tracking_uri=store.uri)
    store.client.delete_model_version(name, v2)

    result = rollback(name, ALIAS, tracking_uri=store.uri)

    assert (result.from_version, result.to_version, result.skipped_versions) == (v3, v1, [v2])
    assert store.aliases(name) == {ALIAS: v1}


def test_rollback_leaves_a_holder_set_outside_visionops(store: Store, name) -> None:
    v1, v2, v3 = (store.add_version(name, accuracy) for accuracy in (0.80, 0.85, 0.90))
    promote(name, v1, ALIAS, FAST, tracking_uri=store.uri)
    promote(name, v2, ALIAS, FAST, tracking_uri=store.uri)
    store.client.set_registered_model_alias(name, ALIAS, v3)  # by hand, e.g. in the MLflow UI

    result = rollback(name, ALIAS, tracking_uri=store.uri)

    assert (result.from_version, result.to_version) == (v3, v2)
    outside = store.history(name)[2]
    assert outside["version"] == v3
    assert (outside["by"], outside["reason"], outside["rolled_back"]) == (
        "unknown",
        SET_OUTSIDE_VISIONOPS,
        True,
    )


def test_rollback_without_a_previous_holder_is_an_error(store: Store, name) -> None:
    version = store.add_version(name, 0.8)
    with pytest.raises(RegistryError, match="points to no version"):
        rollback(name, ALIAS, tracking_uri=store.uri)
    promote(name, version, ALIAS, FAST, tracking_uri=store.uri)
    with pytest.raises(RegistryError, match="no previous holder"):
        rollback(name, ALIAS, tracking_uri=store.uri)
    assert store.aliases(name) == {ALIAS: version}


def test_cli_promote_and_rollback_print_json_and_exit_codes(
    store: Store, name, capsys: pytest.CaptureFixture[str]
) -> None:
    good, better, worse = (store.add_version(name, accuracy) for accuracy in (0.8, 0.9, 0.6))
    common = ["--model", name, "--alias", ALIAS, "--tracking-uri", store.uri, "--json"]
    gate = ["--latency-runs", "3", "--latency-budget-ms", "10000"]

    def run(*argv: str) -> tuple[int, dict[str, object], str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        payload = json.loads(out.strip().splitlines()[-1]) if code != 2 else {}
        return code, payload, err

    for version in (good, better):
        code, payload, _ = run("promote", "--version", version, *gate, *common)
        assert (code, payload["decision"], payload["alias_moved"]) == (0, "approved", True)
    assert payload["incumbent"] == {"version": good, "val_accuracy": 0.8}
    assert payload["candidate"] == {"version": better, "val_accuracy": 0.9}
    assert payload["policy"] == {
        "max_accuracy_drop": 0.0,
        "latency_budget_ms": 10000.0,
        "latency_runs": 3,
        "latency_threads": 1,
    }
    assert payload["latency"]["num_threads"] == 1  # as a serving worker, not torch's default
    assert payload["latency"]["runs"] == 3 and payload["latency"]["input_shape"] == [1, 3, 32, 32]

    code, payload, _ = run("promote", "--version", worse, *gate, *common)
    assert (code, payload["decision"], payload["alias_moved"]) == (1, "rejected", False)
    assert store.aliases(name) == {ALIAS: better}

    code, payload, _ = run("rollback", *common)
    assert code == 0
    assert (payload["from_version"], payload["to_version"]) == (better, good)
    code, _, err = run("rollback", *common)
    assert code == 2 and err.startswith("error: alias 'production'") and "no previous" in err

    code, _, err = run("promote", "--version", better, "--max-accuracy-drop", "5", *common)
    assert code == 2 and "max accuracy drop must be a fraction between 0 and 1" in err


def test_history_keeps_the_newest_entries_that_fit_one_tag() -> None:
    history = AliasHistory(
        [HistoryEntry(str(i), "2025-01-01T00:00:00+00:00", "x" * 60, "promote") for i in range(200)]
    )
    text = history.to_tag()
    kept = AliasHistory.from_tag(text).entries
    assert len(text) <= MAX_TAG_CHARS
    assert 1 < len(kept) <= MAX_ENTRIES
    assert kept == history.entries[-len(kept) :]

    with pytest.raises(RegistryError, match="not a visionops alias history"):
        AliasHistory.from_tag('{"version": 1}', "visionops.alias_history.production")


def test_policy_rejects_nonsense_thresholds() -> None:
    from visionops.errors import ConfigError

    with pytest.raises(ConfigError, match="latency budget"):
        PromotionPolicy(latency_budget_ms=0)
    with pytest.raises(ConfigError, match="latency runs"):
        PromotionPolicy(latency_runs=0)


def test_time_forward_reports_percentiles_of_single_image_runs() -> None:
    import torch

    from visionops.registry.latency import time_forward

    calls: list[tuple[int, ...]] = []

    def model(images: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(images.shape))
        return images.sum()

    stats = time_forward(model, torch.zeros(1, 3, 32, 32), num_runs=7, num_warmup=2)
    assert calls == [(1, 3, 32, 32)] * 9  # warm-up runs are not timed but do run
    assert (stats.runs, stats.warmup_runs, stats.input_shape) == (7, 2, (1, 3, 32, 32))
    assert 0 < stats.p50_ms <= stats.p95_ms
    assert stats.num_threads == torch.get_num_threads()
