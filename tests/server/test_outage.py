"""The real server goes away mid-training: training goes on, and every point arrives once.

The test holds training at two moments so the outage covers the same work on any machine:
after the first epoch's checkpoint until the server has stopped, and before the final
evaluation until the server is back and the spool has drained. In between, two epochs (their
metric points, validations and checkpoints) run with no server.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.config import TrainConfig, with_fields
from visionops.tracking.sender import deliver
from visionops.tracking.spool import MetricSpool
from visionops.training import checkpoint as ckpt
from visionops.training import train
from visionops.training import trainer as trainer_module

pytestmark = pytest.mark.integration

EPOCHS = 3
OUTAGE_AFTER_EPOCH = 1
WAIT_SEC = 120.0  # for each hand-over between the test and training; normally seconds


def _steps_per_epoch(cfg: TrainConfig) -> int:
    num_val = max(1, round(cfg.data.synthetic_size * cfg.data.val_fraction))
    return (cfg.data.synthetic_size - num_val) // (
        cfg.data.batch_size * cfg.optim.accumulation_steps
    )


def _spool_files(output_dir: Path) -> list[Path]:
    return list(output_dir.glob("*/tracking-spool/*.json"))


def _stored_points(stack: Any, run_id: str) -> list[tuple[str, int]]:
    """(key, step) of every metric row MLflow's tracking database holds for ``run_id``."""
    import psycopg

    uri = stack.settings.database_uri(stack.settings.tracking_db)
    with psycopg.connect(uri) as connection:
        rows = connection.execute(
            "SELECT key, step FROM metrics WHERE run_uuid = %s", (run_id,)
        ).fetchall()
    return [(str(key), int(step)) for key, step in rows]


def test_training_survives_an_outage_and_every_point_arrives_once(
    stack_factory: Callable[..., Any],
    as_user: Callable[..., None],
    tiny_config: TrainConfig,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack = stack_factory()
    as_user(stack, *stack.admin_auth)
    cfg = with_fields(
        tiny_config,
        tracking_uri=stack.url,
        epochs=EPOCHS,
        synthetic_size=200,  # 5 steps per epoch
        log_every_n_steps=1,
        system_metrics=False,
        log_model=False,
    )
    output_dir = cfg.checkpoint.output_dir
    caplog.set_level(logging.INFO, logger="visionops")

    at_outage, server_stopped, at_finalize, server_back = (threading.Event() for _ in range(4))
    observed: dict[str, Any] = {}
    save_checkpoint, finalize_run = ckpt.save_checkpoint, trainer_module.finalize_run

    def save_then_wait_for_the_outage(state: dict[str, Any], path: Path) -> None:
        save_checkpoint(state, path)
        if state["progress"]["epoch"] == OUTAGE_AFTER_EPOCH and not at_outage.is_set():
            at_outage.set()
            assert server_stopped.wait(WAIT_SEC)

    def finalize_once_the_server_is_back(*args: Any, **kwargs: Any) -> Any:
        observed["spooled_during_outage"] = len(_spool_files(output_dir))
        observed["checkpoints"] = sorted(p.name for p in output_dir.glob("*/checkpoints/*.pt"))
        at_finalize.set()
        assert server_back.wait(WAIT_SEC)
        # The sending thread notices the server is back on its own, without a flush.
        deadline = time.monotonic() + WAIT_SEC
        while _spool_files(output_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        observed["spooled_after_reconnect"] = len(_spool_files(output_dir))
        return finalize_run(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_wait_for_the_outage)
    monkeypatch.setattr(trainer_module, "finalize_run", finalize_once_the_server_is_back)

    failures: list[BaseException] = []

    def outage() -> None:
        try:
            assert at_outage.wait(WAIT_SEC), "training never reached the outage"
            stack.server.stop()
            server_stopped.set()
            assert at_finalize.wait(WAIT_SEC), "training did not go on without the server"
            stack.restart_server()
        except BaseException as error:
            failures.append(error)
        finally:
            server_stopped.set()
            server_back.set()

    operator = threading.Thread(target=outage, name="outage")
    operator.start()
    try:
        result = train(cfg)
    finally:
        operator.join(timeout=2 * WAIT_SEC)
    assert not failures, failures

    # Training went on through the outage and finished normally.
    assert result.epochs_completed == EPOCHS
    client = MlflowClient(stack.url)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert observed["spooled_during_outage"] >= EPOCHS - OUTAGE_AFTER_EPOCH
    last_step = EPOCHS * _steps_per_epoch(cfg)
    assert observed["checkpoints"][-1] == f"step-{last_step:09d}.pt"  # saved with no server
    assert observed["spooled_after_reconnect"] == 0
    assert _spool_files(output_dir) == []

    # Every point produced is in MLflow exactly once. The store's rows, read in one query: each
    # request to the server checks the admin's password hash, about a second on a loaded machine.
    stored: dict[str, list[int]] = {}
    for key, step in _stored_points(stack, result.run_id):
        stored.setdefault(key, []).append(step)
    history = client.get_metric_history(result.run_id, names.STEP_LOSS)
    assert sorted(m.step for m in history) == sorted(stored[names.STEP_LOSS])
    steps = _steps_per_epoch(cfg)
    expected_steps = {
        "step": list(range(1, EPOCHS * steps + 1)),
        "epoch": list(range(1, EPOCHS + 1)),
        "final": [EPOCHS],
    }
    assert {_step_axis(key) for key in stored} == set(expected_steps), sorted(stored)
    produced_during_outage = 0
    for key, key_steps in stored.items():
        axis = _step_axis(key)
        assert sorted(key_steps) == expected_steps[axis], key
        if axis != "final":
            first_after = OUTAGE_AFTER_EPOCH * (steps if axis == "step" else 1)
            produced_during_outage += sum(step > first_after for step in key_steps)
    assert set(stored) == set(run.data.metrics)

    # One short warning for the outage, one line for the replay of what it spooled.
    warnings = [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("visionops")
    ]
    assert [r.name for r in warnings] == ["visionops.tracking.sender"], warnings
    assert "unreachable" in warnings[0].getMessage() and warnings[0].exc_info is None
    replayed = [
        int(match.group(1))
        for r in caplog.records
        if (match := re.search(r"replayed (\d+) metric points", r.getMessage()))
    ]
    assert sum(replayed) == produced_during_outage > 0


def test_the_server_stores_a_batch_sent_twice_once(
    shared_stack: Any, as_user: Callable[..., None], tmp_path: Path
) -> None:
    """What makes replay safe after a lost response: PostgreSQL-backed MLflow ignores a point
    it already has (same key, value, timestamp and step)."""
    as_user(shared_stack, *shared_stack.admin_auth)
    client = MlflowClient(shared_stack.url)
    run_id = client.create_run(client.create_experiment(f"replay-{uuid.uuid4().hex}")).info.run_id
    points = [Metric("loss", step / 10, 1_700_000_000_000 + step, step) for step in range(1, 6)]
    spool = MetricSpool(tmp_path / "spool")

    spool.append(run_id, shared_stack.url, points)
    assert deliver(spool).sent_points == 5
    spool.append(run_id, shared_stack.url, points)  # the response was lost: sent again
    spool.append(
        run_id,
        shared_stack.url,
        [*points[2:], *(Metric("loss", s / 10, 1_700_000_000_000 + s, s) for s in (6, 7))],
    )
    result = deliver(spool)

    assert (result.sent_points, result.outage, result.refusal) == (10, None, None)
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))
    assert history == [(step, step / 10) for step in range(1, 8)]


_PER_STEP = (names.STEP_LOSS, names.RUNNING_ACCURACY, names.LEARNING_RATE, names.IMAGES_PER_SEC)
_PER_EPOCH = (
    names.TRAIN_LOSS,
    names.TRAIN_ACCURACY,
    names.VAL_LOSS,
    names.VAL_ACCURACY,
    names.EPOCH_SECONDS,
)


def _step_axis(key: str) -> str:
    """What a metric's steps count: optimizer steps, epochs, or the one final evaluation."""
    if key in _PER_STEP:
        return "step"
    return "epoch" if key in _PER_EPOCH else "final"
