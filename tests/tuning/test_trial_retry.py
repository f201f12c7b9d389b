"""A trial that raises is retried from its checkpoint up to ``max_failures`` times, then marked
errored while the rest of the sweep goes on.

The faults live here only: ``_failing_run_trial`` stands in for ``run_trial`` in the sweep, runs
the real one, and raises from ``train``'s epoch callback right after the first epoch of an
attempt was reported to Tune with its checkpoint. Each attempt appends a line to a JSON-lines
log, which is how the test sees what Tune retried and where each retry started.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from ray import cloudpickle, tune

from visionops import names
from visionops.config import TrainConfig
from visionops.training import EpochCallback, EpochEnd, TrainResult
from visionops.tuning import sweep
from visionops.tuning.sweep import SweepOptions, run_sweep

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_EPOCHS = 3
_MAX_FAILURES = 1
# Each trial's learning rate picks its fate: how many of its first attempts fail.
_RECOVERS, _KEEPS_FAILING = 0.05, 0.01
_FAILING_ATTEMPTS = {_RECOVERS: 1, _KEEPS_FAILING: float("inf")}


class InjectedFault(RuntimeError):
    """The failure this test makes a trial raise."""


def _attempts(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _failing_run_trial(log: Path) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """``run_trial`` failing each trial's first ``_FAILING_ATTEMPTS[lr]`` attempts."""

    def run_trial(config: dict[str, Any], base_config: dict[str, Any]) -> None:
        from visionops.tuning import trainable

        trial_id = tune.get_context().get_trial_id()
        attempt = sum(1 for record in _attempts(log) if record["trial_id"] == trial_id)
        fails = attempt < _FAILING_ATTEMPTS[config["lr"]]
        record: dict[str, Any] = {
            "trial_id": trial_id,
            "lr": config["lr"],
            "restored": tune.get_checkpoint() is not None,
            "epochs": [],
            "failed": False,
        }
        real_train = trainable.train

        def train(
            cfg: TrainConfig, on_epoch_end: EpochCallback | None = None, *, resume: str | None
        ) -> TrainResult:
            def on_epoch(end: EpochEnd) -> None:
                record["epochs"].append(end.epoch)
                if on_epoch_end is not None:
                    on_epoch_end(end)  # reports the epoch and its checkpoint to Tune
                if fails:
                    raise InjectedFault(f"attempt {attempt} of trial {trial_id}")

            return real_train(cfg, on_epoch_end=on_epoch, resume=resume)

        # The attempt runs in a Ray worker process of its own, so the patch stays in it.
        trainable.train = train
        try:
            trainable.run_trial(config, base_config)
        except InjectedFault:
            record["failed"] = True
            raise
        finally:
            trainable.train = real_train
            with log.open("a") as handle:
                handle.write(json.dumps(record) + "\n")

    return run_trial


@pytest.fixture
def shipped_by_value() -> Iterator[None]:
    """Ray workers cannot import this test module, so its functions travel pickled by value."""
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def test_a_failing_trial_retries_from_its_checkpoint_then_errors_without_ending_the_sweep(
    tmp_path: Path,
    tiny_config: TrainConfig,
    tracking_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    shipped_by_value: None,
) -> None:
    log = tmp_path / "attempts.jsonl"
    monkeypatch.setattr(sweep, "run_trial", _failing_run_trial(log))
    options = SweepOptions(
        base=tiny_config,
        recipe="debug",
        space={"lr": tune.choice([_RECOVERS, _KEEPS_FAILING])},
        points_to_evaluate=[{"lr": _RECOVERS}, {"lr": _KEEPS_FAILING}],
        search="random",
        scheduler="fifo",
        num_samples=2,
        max_epochs=_EPOCHS,
        max_failures=_MAX_FAILURES,
        max_concurrent_trials=1,
        num_cpus=2,
        storage_path=tmp_path / "tune-results",
        name="sweep",
        register_as="tuned",
    )
    result = run_sweep(options)

    trials = {t.config["lr"]: t for t in result.trials}
    recovered, errored = trials[_RECOVERS], trials[_KEEPS_FAILING]
    attempts: dict[float, list[dict[str, Any]]] = {_RECOVERS: [], _KEEPS_FAILING: []}
    for record in _attempts(log):
        attempts[record["lr"]].append(record)
    assert {r["trial_id"] for r in attempts[_RECOVERS]} == {recovered.trial_id}
    assert {r["trial_id"] for r in attempts[_KEEPS_FAILING]} == {errored.trial_id}

    # Failed after reporting epoch 1; the retry got that checkpoint and went on from epoch 2.
    assert [(r["restored"], r["epochs"], r["failed"]) for r in attempts[_RECOVERS]] == [
        (False, [1], True),
        (True, [2, 3], False),
    ]
    assert (recovered.status, recovered.epochs) == ("completed", _EPOCHS)
    # Every attempt failed after one epoch: a first try and max_failures retries, each
    # continuing from the checkpoint the one before had reported.
    assert [(r["restored"], r["epochs"], r["failed"]) for r in attempts[_KEEPS_FAILING]] == [
        (False, [1], True),
        (True, [2], True),
    ]
    assert len(attempts[_KEEPS_FAILING]) == _MAX_FAILURES + 1
    assert (errored.status, errored.epochs) == ("errored", 2)

    client = MlflowClient(tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
    )
    # Retries reopened each trial's run rather than starting another.
    assert recovered.run_id is not None and errored.run_id is not None
    assert sorted(r.info.run_id for r in children) == sorted([recovered.run_id, errored.run_id])
    for run_id, status, epochs in (
        (recovered.run_id, "FINISHED", _EPOCHS),
        (errored.run_id, "FAILED", 2),
    ):
        assert client.get_run(run_id).info.status == status
        history = client.get_metric_history(run_id, names.VAL_ACCURACY)
        assert sorted(m.step for m in history) == list(range(1, epochs + 1))

    assert result.best_run_id == recovered.run_id
    assert result.best_config == {"lr": _RECOVERS}
    version = client.get_model_version_by_alias("tuned", names.CANDIDATE_ALIAS)
    assert (version.run_id, int(version.version)) == (recovered.run_id, result.registered_version)
