"""An epoch of a run without a val split (``val_fraction=0``): training metrics only, which the
history, the training curves and the Pushgateway take as they are."""

from __future__ import annotations

import torch

from visionops import names
from visionops.tracking import plots
from visionops.tracking import pushgateway as pg
from visionops.training.evaluate import EvalResult
from visionops.training.job import TrainState


def _epoch(state: TrainState) -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    state.record_batch(torch.tensor(0.5), logits, torch.tensor([0, 1, 1, 1]))


def test_an_epoch_without_validation_has_training_metrics_only() -> None:
    state = TrainState()
    _epoch(state)
    metrics = state.finish_epoch(None, seconds=2.0)
    assert metrics == {
        names.TRAIN_LOSS: 0.5,
        names.TRAIN_ACCURACY: 0.5,  # 2 of the 4 labels
        names.EPOCH_SECONDS: 2.0,
    }
    assert state.history == [{names.EPOCH_KEY: 1, **metrics}]
    assert (state.epoch, state.seen, state.micro_batches_done) == (1, 0, 0)


def test_an_epoch_with_validation_keeps_its_metrics_in_their_order() -> None:
    state = TrainState()
    _epoch(state)
    val = EvalResult(loss=0.7, accuracy=0.25, confusion=torch.tensor([[1, 1], [2, 0]]))
    metrics = state.finish_epoch(val, seconds=2.0)
    assert list(metrics.items()) == [
        (names.TRAIN_LOSS, 0.5),
        (names.TRAIN_ACCURACY, 0.5),
        (names.VAL_LOSS, 0.7),
        (names.VAL_ACCURACY, 0.25),
        (names.EPOCH_SECONDS, 2.0),
    ]


def test_the_curves_and_the_pushgateway_take_training_metrics_only() -> None:
    state = TrainState()
    for _ in range(2):
        _epoch(state)
        metrics = state.finish_epoch(None, seconds=1.0)

    figure = plots.training_curves(state.history)
    loss_axis, accuracy_axis = figure.axes
    assert [line.get_label() for line in loss_axis.get_lines()] == ["train"]
    assert list(accuracy_axis.get_lines()[0].get_ydata()) == [0.5, 0.5]
    plots.close(figure)

    # Never started, so nothing is sent: the gauges are read from its registry.
    pusher = pg.ProgressPusher("http://127.0.0.1:9", "run", experiment="e")
    pusher.log_epoch(2, 6, metrics)
    labels = {"experiment": "e", "sweep": ""}
    assert pusher.registry.get_sample_value(pg.EPOCH, labels) == 2
    assert pusher.registry.get_sample_value(pg.STEP, labels) == 6
    assert pusher.registry.get_sample_value(pg.VAL_ACCURACY, labels) is None  # absent, not 0
