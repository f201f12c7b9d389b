"""visionops: train, track and ship image classifiers.

>>> import visionops
>>> cfg = visionops.TrainConfig(epochs=2, data={"dataset": "synthetic"})
>>> result = visionops.train(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from visionops.config import TrainConfig

__version__ = "0.1.0"
__all__ = ["TrainConfig", "TrainResult", "__version__", "train"]

if TYPE_CHECKING:
    from visionops.training import TrainResult, train


def __getattr__(name: str) -> Any:
    # Importing training pulls in torch and MLflow; keep `import visionops` (and the CLI's
    # --help) fast by loading it on first use.
    if name in ("train", "TrainResult"):
        from visionops import training

        return getattr(training, name)
    raise AttributeError(f"module 'visionops' has no attribute {name!r}")
