"""Search algorithms and trial schedulers, by the names ``visionops tune`` accepts.

Each is a ``Registry`` entry (``SEARCHERS``, ``SCHEDULERS``) that imports Ray Tune only when
it is called, so the CLI can list the names without importing Ray.

>>> create_searcher("optuna", max_concurrent=2, seed=0)  # doctest: +SKIP
>>> create_scheduler("asha", 10, 1, 2, sweep_dir=Path("sweeps/s"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from visionops._registry import Registry

#: The names a sweep's options accept, in the order ``visionops tune --help`` lists them.
SearchName = Literal["optuna", "hyperopt", "random"]
SchedulerName = Literal["asha", "hyperband", "fifo"]
SEARCH_NAMES: tuple[SearchName, ...] = get_args(SearchName)
SCHEDULER_NAMES: tuple[SchedulerName, ...] = get_args(SchedulerName)

#: (points_to_evaluate, max_concurrent, seed) -> a Tune searcher.
SearcherFactory = Callable[[list[dict[str, Any]] | None, int, int | None], Any]
#: (max_epochs, grace_period, reduction_factor, sweep_dir) -> a Tune trial scheduler.
SchedulerFactory = Callable[[int, int, int, Path], Any]

SEARCHERS: Registry[SearcherFactory] = Registry("search algorithm")
SCHEDULERS: Registry[SchedulerFactory] = Registry("trial scheduler")


def create_searcher(
    name: str,
    max_concurrent: int,
    seed: int | None = None,
    points_to_evaluate: Sequence[dict[str, Any]] | None = None,
) -> Any:
    """A Tune searcher suggesting at most ``max_concurrent`` trials at a time.

    ``points_to_evaluate`` are tried first, in order (e.g. the recipe's own values).
    Metric and mode come from the ``TuneConfig``.

    Raises:
        ConfigError: no search algorithm is registered as ``name``.
    """
    points = list(points_to_evaluate) if points_to_evaluate else None
    return SEARCHERS.get(name)(points, max_concurrent, seed)


def create_scheduler(
    name: str,
    max_epochs: int,
    grace_period: int,
    reduction_factor: int,
    sweep_dir: Path,
) -> Any:
    """A Tune trial scheduler; epochs are Tune's ``training_iteration`` (one report each).

    ASHA keeps its decisions in ``sweep_dir`` so that a resumed sweep honours them
    (``visionops.tuning.persisted_scheduler``).

    Raises:
        ConfigError: no trial scheduler is registered as ``name``.
    """
    return SCHEDULERS.get(name)(max_epochs, grace_period, reduction_factor, sweep_dir)


@SEARCHERS.register("random")
def _random(points: list[dict[str, Any]] | None, max_concurrent: int, seed: int | None) -> Any:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(
        points_to_evaluate=points, max_concurrent=max_concurrent, random_state=seed
    )


@SEARCHERS.register("optuna")
def _optuna(points: list[dict[str, Any]] | None, max_concurrent: int, seed: int | None) -> Any:
    from ray.tune.search.optuna import OptunaSearch

    return _one_at_a_time(OptunaSearch(points_to_evaluate=points, seed=seed), max_concurrent)


@SEARCHERS.register("hyperopt")
def _hyperopt(points: list[dict[str, Any]] | None, max_concurrent: int, seed: int | None) -> Any:
    from ray.tune.search.hyperopt import HyperOptSearch

    searcher = HyperOptSearch(points_to_evaluate=points, random_state_seed=seed)
    return _one_at_a_time(searcher, max_concurrent)


def _one_at_a_time(searcher: Any, max_concurrent: int) -> Any:
    """``searcher`` suggesting at most ``max_concurrent`` trials that have not finished.

    Model-based searchers learn from finished trials: suggesting all of them up front would
    make them random search."""
    from ray.tune.search import ConcurrencyLimiter

    return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)


@SCHEDULERS.register("asha")
def _asha(max_epochs: int, grace_period: int, reduction_factor: int, sweep_dir: Path) -> Any:
    from visionops.tuning.persisted_scheduler import STATE_FILE, PersistedASHA

    return PersistedASHA(
        sweep_dir / STATE_FILE,
        time_attr="training_iteration",
        max_t=max_epochs,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
    )


@SCHEDULERS.register("hyperband")
def _hyperband(max_epochs: int, grace_period: int, reduction_factor: int, sweep_dir: Path) -> Any:
    from ray.tune.schedulers import HyperBandScheduler

    return HyperBandScheduler(
        time_attr="training_iteration", max_t=max_epochs, reduction_factor=reduction_factor
    )


@SCHEDULERS.register("fifo")
def _fifo(max_epochs: int, grace_period: int, reduction_factor: int, sweep_dir: Path) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()
