"""Search algorithms and trial schedulers, by the names ``visionops tune`` accepts.

>>> create_searcher("optuna", max_concurrent=2, seed=0)  # doctest: +SKIP
>>> create_scheduler("asha", 10, 1, 2, sweep_dir=Path("sweeps/s"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

SearchName = Literal["optuna", "hyperopt", "random"]
SchedulerName = Literal["asha", "hyperband", "fifo"]
SEARCHERS: tuple[SearchName, ...] = ("optuna", "hyperopt", "random")
SCHEDULERS: tuple[SchedulerName, ...] = ("asha", "hyperband", "fifo")


def create_searcher(
    name: SearchName,
    max_concurrent: int,
    seed: int | None = None,
    points_to_evaluate: Sequence[dict[str, Any]] | None = None,
) -> Any:
    """A Tune searcher suggesting at most ``max_concurrent`` trials at a time.

    ``points_to_evaluate`` are tried first, in order (e.g. the recipe's own values).
    Metric and mode come from the ``TuneConfig``.
    """
    points = list(points_to_evaluate) if points_to_evaluate else None
    if name == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(
            points_to_evaluate=points, max_concurrent=max_concurrent, random_state=seed
        )
    from ray.tune.search import ConcurrencyLimiter

    searcher: Any
    if name == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(points_to_evaluate=points, seed=seed)
    elif name == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        searcher = HyperOptSearch(points_to_evaluate=points, random_state_seed=seed)
    else:
        raise ValueError(f"unknown search algorithm {name!r}")  # the CLI offers SEARCHERS only
    # Model-based searchers learn from finished trials: suggesting all of them up front would
    # make them random search.
    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)


def create_scheduler(
    name: SchedulerName,
    max_epochs: int,
    grace_period: int,
    reduction_factor: int,
    sweep_dir: Path,
) -> Any:
    """A Tune trial scheduler; epochs are Tune's ``training_iteration`` (one report each).

    ASHA keeps its decisions in ``sweep_dir`` so that a resumed sweep honours them
    (``visionops.tuning.persisted_scheduler``).
    """
    from ray.tune.schedulers import FIFOScheduler, HyperBandScheduler

    if name == "asha":
        from visionops.tuning.persisted_scheduler import STATE_FILE, PersistedASHA

        return PersistedASHA(
            sweep_dir / STATE_FILE,
            time_attr="training_iteration",
            max_t=max_epochs,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
        )
    if name == "hyperband":
        return HyperBandScheduler(
            time_attr="training_iteration", max_t=max_epochs, reduction_factor=reduction_factor
        )
    if name == "fifo":
        return FIFOScheduler()
    raise ValueError(f"unknown scheduler {name!r}")  # the CLI offers SCHEDULERS only
