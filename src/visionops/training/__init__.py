"""Training: ``train(cfg) -> TrainResult`` and evaluation."""

from visionops.training.evaluate import EvalResult, evaluate
from visionops.training.trainer import TrainResult, train

__all__ = ["EvalResult", "TrainResult", "evaluate", "train"]
