"""train(cfg) in-process on the debug recipe: step accounting and resume edge cases."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.config import TrainConfig, with_fields
from visionops.errors import ConfigError
from visionops.training import checkpoint as ckpt
from visionops.training import train


def test_gradient_accumulation_steps_the_optimizer_once_per_group(tiny_config: TrainConfig) -> None:
    cfg = with_fields(tiny_config, accumulation_steps=3, log_every_n_steps=1, log_model=False)
    result = train(cfg)
    steps_per_epoch = 360 // (32 * 3)
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(result.run_dir)[0])
    assert state["progress"]["step"] == 2 * steps_per_epoch
    lr_steps = [
        m.step
        for m in MlflowClient(cfg.tracking.tracking_uri).get_metric_history(
            result.run_id, names.LEARNING_RATE
        )
    ]
    assert lr_steps == list(range(1, 2 * steps_per_epoch + 1))


def test_resume_skips_a_corrupt_newest_checkpoint(
    tiny_config: TrainConfig, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = with_fields(tiny_config, checkpoint_every_n_steps=4, keep_checkpoints=10, log_model=False)
    first = train(cfg)
    newest, previous = ckpt.list_checkpoints(first.run_dir)[:2]
    newest.write_bytes(newest.read_bytes()[:100])

    with caplog.at_level(logging.WARNING):
        again = train(cfg, resume=first.run_dir)

    assert any(
        newest.name in r.getMessage() and "previous" in r.getMessage() for r in caplog.records
    )
    assert again.run_id == first.run_id
    assert again.metrics == pytest.approx(first.metrics, abs=0.05)
    assert ckpt.list_checkpoints(first.run_dir)[0].name == newest.name  # rewritten, now valid
    ckpt.load_checkpoint(newest)
    assert previous.exists()


def test_resume_refuses_a_changed_configuration(tiny_config: TrainConfig) -> None:
    cfg = with_fields(tiny_config, epochs=1, warmup_epochs=0.5, log_model=False)
    first = train(cfg)
    with pytest.raises(ConfigError, match=r"these fields differ: lr: 0.05 -> 0.5"):
        train(with_fields(cfg, lr=0.5), resume=first.run_id)
    # Run options (fields that do not change what is computed) may differ.
    resumed = train(
        with_fields(
            cfg,
            num_workers=1,
            device="cpu",
            log_every_n_steps=5,
            keep_checkpoints=1,
            system_metrics=True,
        ),
        resume=first.run_id,
    )
    assert resumed.run_id == first.run_id


def test_training_leaves_the_process_tracking_uri_to_the_user(
    new_tracking_store: Callable[..., str],
    tiny_config: TrainConfig,
    tracking_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    import mlflow

    cfg = with_fields(tiny_config, epochs=1, register_as="uri-check")
    client = MlflowClient(tracking_uri)
    try:
        # Nothing set by the user: nothing set afterwards.
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        first = train(cfg)
        assert not mlflow.is_tracking_uri_set() and "MLFLOW_TRACKING_URI" not in os.environ
        # The user's own setting: the same afterwards, and the run still in the config's store.
        users = new_tracking_store(tmp_path, "users-own.db")
        mlflow.set_tracking_uri(users)
        second = train(with_fields(cfg, output_dir=str(tmp_path / "second")))
        assert mlflow.get_tracking_uri() == users == os.environ["MLFLOW_TRACKING_URI"]
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    for result, version in ((first, "1"), (second, "2")):
        assert client.get_run(result.run_id).info.status == "FINISHED"
        assert client.get_model_version("uri-check", version).run_id == result.run_id


def test_resume_without_checkpoints_is_an_error(tiny_config: TrainConfig, tmp_path: Path) -> None:
    (tmp_path / "outputs" / "empty-run").mkdir(parents=True)
    from visionops.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no checkpoints"):
        train(tiny_config, resume="empty-run")


def test_only_rank_zero_tracks_and_writes(
    tiny_config: TrainConfig, tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    result = train(with_fields(tiny_config, epochs=1, warmup_epochs=0.5))
    assert result.run_id is None and result.model_uri is None
    assert result.epochs_completed == 1 and 0 <= result.metrics[names.VAL_ACCURACY] <= 1
    assert not (tmp_path / "outputs").exists()
    assert MlflowClient(tracking_uri).get_experiment_by_name("tests") is None


def test_runs_of_one_seed_get_different_names(tiny_config: TrainConfig, tracking_uri: str) -> None:
    # MLflow names an unnamed run from Python's `random`, which train() seeds with cfg.seed.
    cfg = with_fields(tiny_config, epochs=1, warmup_epochs=0.5, log_model=False)
    first, second = train(cfg), train(cfg)
    client = MlflowClient(tracking_uri)
    run_names = {client.get_run(r.run_id).info.run_name for r in (first, second)}
    assert len(run_names) == 2, run_names
    assert first.metrics == second.metrics  # the seeding itself is unchanged
