from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from visionops.config import TrackingConfig
from visionops.tracking import RunTracker
from visionops.tracking.tags import run_tags


def test_a_disabled_tracker_creates_nothing(tmp_path: Path, tracking_uri: str) -> None:
    tracker = RunTracker(TrackingConfig(tracking_uri=tracking_uri, experiment="t"), enabled=False)
    assert tracker.start({"a": "1"}, {}) is None
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.end()
    assert mlflow.active_run() is None
    assert MlflowClient(tracking_uri).get_experiment_by_name("t") is None


def test_resumed_run_skips_points_it_already_has(tracking_uri: str) -> None:
    cfg = TrackingConfig(tracking_uri=tracking_uri, experiment="t", system_metrics=False)
    first = RunTracker(cfg)
    run_id = first.start({"optim.lr": "0.1"}, {"k": "v"})
    for step in (1, 2, 3):
        first.log_metrics({"loss": float(step)}, step=step)
    first.end("KILLED")
    client = MlflowClient(tracking_uri)
    assert client.get_run(run_id).info.status == "KILLED"

    second = RunTracker(cfg)
    assert second.start({"optim.lr": "0.1"}, {"k": "v"}, resume_run_id=run_id) == run_id
    for step in (2, 3, 4):
        second.log_metrics({"loss": 10.0 * step}, step=step)
    second.end()

    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
    assert history == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(run_id).data.params == {"optim.lr": "0.1"}


def test_flush_makes_points_durable(tracking_uri: str) -> None:
    tracker = RunTracker(TrackingConfig(tracking_uri=tracking_uri, system_metrics=False))
    run_id = tracker.start({}, {})
    tracker.log_metrics({"a": 1.0, "b": 2.0}, step=7)
    tracker.flush()
    assert MlflowClient(tracking_uri).get_run(run_id).data.metrics == {"a": 1.0, "b": 2.0}
    tracker.end()


def test_default_experiment_and_tags(tracking_uri: str) -> None:
    tracker = RunTracker(TrackingConfig(tracking_uri=tracking_uri, system_metrics=False))
    run_id = tracker.start({}, run_tags("cpu"))
    tracker.end()
    run = MlflowClient(tracking_uri).get_run(run_id)
    assert MlflowClient(tracking_uri).get_experiment(run.info.experiment_id).name == "visionops"
    assert {
        "visionops.version",
        "torch.version",
        "torchvision.version",
        "device",
        "hostname",
    } <= set(run.data.tags)
