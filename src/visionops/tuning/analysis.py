"""What a finished sweep says about its search space: parameter importances and parallel
coordinates, computed and drawn by Optuna.

Whichever searcher ran the sweep, its trials are replayed into an in-memory Optuna study: one
complete trial per sweep trial with a validation accuracy, the sampled values as params and
the last validation accuracy as the value. Optuna's importance evaluators and plots then work
on it as on any study.

    >>> study = sweep_study(trials)  # doctest: +SKIP
    >>> param_importances(study)  # doctest: +SKIP
    {'lr': 0.83, 'batch_size': 0.11, 'momentum': 0.06}
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np

from visionops import names

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure
    from optuna.distributions import BaseDistribution

    from visionops.tuning.results import TrialSummary

logger = logging.getLogger(__name__)

# Positive numbers seen over a decade or more are analysed on a log scale: learning rates and
# weight decays are sampled that way, and on a linear axis all but the largest values collapse.
_LOG_SCALE_RATIO = 10.0
_SEED = 0  # the fANOVA forest's, so the same trials give the same importances


def sweep_study(trials: Sequence[TrialSummary]) -> optuna.Study | None:
    """An in-memory study of the trials that reported a validation accuracy.

    Returns:
        The study, or None (saying why in the log) when there is nothing to compare: fewer
        than two such trials, or no parameter that took more than one value.
    """
    scored = [t for t in trials if t.val_accuracy is not None and math.isfinite(t.val_accuracy)]
    if len(scored) < 2:
        logger.info(
            "no parameter importances or parallel coordinates for the sweep: %d trial(s) "
            "reported a validation accuracy, at least 2 are needed",
            len(scored),
        )
        return None
    distributions = infer_distributions([t.config for t in scored])
    if not distributions:
        logger.info(
            "no parameter importances or parallel coordinates for the sweep: every parameter "
            "took the same value in all %d trials",
            len(scored),
        )
        return None
    with _quiet_optuna() as optuna:
        study = optuna.create_study(direction="maximize")
        for trial in scored:
            params = {name: _plain(trial.config[name]) for name in distributions}
            study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions=distributions, value=trial.val_accuracy
                )
            )
    return study


def infer_distributions(configs: Sequence[Mapping[str, Any]]) -> dict[str, BaseDistribution]:
    """Distributions covering the values the trials took, for parameters that took several.

    A sweep does not keep its search space (a resumed one only has Tune's trials), so numbers
    get the range they were seen over, on a log scale when positive and spanning a decade or
    more; anything else becomes a choice among the values seen. Parameters missing from any
    trial are left out.
    """
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    names = set(configs[0]).intersection(*configs[1:]) if configs else set()
    distributions: dict[str, BaseDistribution] = {}
    for name in sorted(names):
        values = [_plain(config[name]) for config in configs]
        if len({repr(value) for value in values}) < 2:
            continue
        if not all(_is_number(value) for value in values):
            distributions[name] = CategoricalDistribution(sorted(set(values), key=repr))
            continue
        low, high = min(values), max(values)
        log = low > 0 and high / low >= _LOG_SCALE_RATIO
        if all(isinstance(value, int) for value in values):
            distributions[name] = IntDistribution(int(low), int(high), log=log)
        else:
            distributions[name] = FloatDistribution(float(low), float(high), log=log)
    return distributions


def param_importances(study: optuna.Study) -> dict[str, float] | None:
    """Each parameter's share of the variation in validation accuracy, most important first.

    Returns:
        Importances summing to 1, or None (saying why in the log) when every trial scored the
        same and there is no variation to share.
    """
    if len({trial.value for trial in study.trials}) < 2:
        logger.info(
            "no parameter importances for the sweep: all %d trials scored %s %s",
            len(study.trials),
            names.VAL_ACCURACY,
            study.trials[0].value,
        )
        return None
    with _quiet_optuna() as optuna:
        importances = optuna.importance.get_param_importances(study, evaluator=_evaluator())
    return {name: float(value) for name, value in importances.items()}


def importance_figure(study: optuna.Study) -> Figure:
    """Optuna's bar chart of :func:`param_importances` (same evaluator, same numbers)."""
    with _quiet_optuna() as optuna:
        axes = optuna.visualization.matplotlib.plot_param_importances(
            study, evaluator=_evaluator(), target_name=names.VAL_ACCURACY
        )
        figure = axes.figure
        figure.tight_layout()
    return figure


def parallel_coordinates_figure(study: optuna.Study) -> Figure:
    """Optuna's parallel coordinates: a line per trial through its values, colored by score."""
    with _quiet_optuna() as optuna:
        axes = optuna.visualization.matplotlib.plot_parallel_coordinate(
            study, target_name=names.VAL_ACCURACY
        )
        figure = axes.figure
        # An axis per parameter plus the score's; the default width crowds the tick labels.
        num_axes = len(study.trials[0].params) + 1
        figure.set_size_inches(max(6.4, 1.6 * num_axes + 1.5), 5.0)
        figure.tight_layout()
    return figure


def _evaluator() -> optuna.importance.BaseImportanceEvaluator:
    # fANOVA rather than Optuna's default PED-ANOVA: PED-ANOVA compares the top 10% of trials
    # with the rest and wants dozens of trials; sweeps here have a handful to a few dozen.
    from optuna.importance import FanovaImportanceEvaluator

    return FanovaImportanceEvaluator(seed=_SEED)


@contextmanager
def _quiet_optuna() -> Iterator[Any]:
    """Optuna without its experimental-API warnings and INFO logs, and with matplotlib's
    settings restored afterwards: its plots switch the process to the ggplot style."""
    import matplotlib
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings(), matplotlib.rc_context():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield optuna
    finally:
        optuna.logging.set_verbosity(verbosity)


def _plain(value: Any) -> Any:
    """The value as one of the types Optuna params take (bool, int, float, str, None)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
