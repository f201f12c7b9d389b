"""Training: ``train(cfg) -> TrainResult`` and evaluation."""

from visionops.training.evaluate import EvalResult, evaluate
from visionops.training.trainer import EpochCallback, EpochEnd, TrainResult, train

__all__ = ["EpochCallback", "EpochEnd", "EvalResult", "TrainResult", "evaluate", "train"]
