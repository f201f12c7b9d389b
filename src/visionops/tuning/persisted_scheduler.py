"""ASHA whose decisions survive ``visionops tune --resume``.

``Tuner.restore`` brings back the trials and the searcher from the sweep folder, but the
scheduler from its pickled start state (ray-project/ray#30838), and the trials from Tune's
last experiment snapshot, which can be seconds behind. A trial that ASHA stopped after that
snapshot came back as unfinished and, judged by an ASHA that had forgotten every rung, ran all
its epochs. ``PersistedASHA`` saves itself (Ray's own ``save``: its rungs, and the trials it
stopped) to ``state_path`` in the sweep folder at every decision, before Tune acts on it, and
reloads that file when the resumed sweep adds its first trial; a trial it had stopped is then
stopped again before it starts.

    >>> PersistedASHA(Path("sweep/asha-state.pkl"), "training_iteration", 3, 1, 2)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

STATE_FILE = "asha-state.pkl"  # in the sweep folder


class PersistedASHA(AsyncHyperBandScheduler):
    """``AsyncHyperBandScheduler`` (ASHA) that keeps its state in ``state_path``.

    Trials it stopped are known by id; one that Tune's snapshot did not hold at all is known
    again by its sampled config (see ``_claim_suggested_again``).
    """

    def __init__(
        self, state_path: Path, time_attr: str, max_t: int, grace_period: int, reduction_factor: int
    ) -> None:
        super().__init__(
            time_attr=time_attr,
            max_t=max_t,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
        )
        # Only a new sweep constructs one (a resumed sweep unpickles it): whatever an earlier
        # sweep of the same name left there is not this sweep's.
        state_path.unlink(missing_ok=True)
        self.state_path = str(state_path)
        self.time_attr = time_attr
        self.max_t = max_t
        #: Trials stopped short of max_t: trial id -> {"config", "iteration", "result": the last}.
        self.stopped_trials: dict[str, dict[str, Any]] = {}
        self.reloaded = False

    def on_trial_add(self, tune_controller: TuneController, trial: Trial) -> None:
        self._reload_once()
        super().on_trial_add(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: TuneController) -> Trial | None:
        trials = tune_controller.get_trials()
        self._claim_suggested_again(trials)
        for trial in trials:
            if trial.status in (Trial.PENDING, Trial.PAUSED) and self.was_stopped(trial):
                # Back from a snapshot taken before the stop: it must neither train again nor
                # go on, so it ends here, as it ended before, with the last result it had
                # reported (its run, its epochs) as its own. A trial that never started has
                # no folder yet, and Tune's progress report needs one.
                last_result = self.stopped_trials[trial.trial_id].get("result")
                if last_result:  # states saved before results were kept have none
                    trial.run_metadata.last_result = {**last_result, "trial_id": trial.trial_id}
                trial.init_local_path()
                tune_controller.stop_trial(trial)
        return super().choose_trial_to_run(tune_controller)

    def on_trial_result(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> str:
        if self.was_stopped(trial):
            return TrialScheduler.STOP
        action: str = super().on_trial_result(tune_controller, trial, result)
        iteration = result.get(self.time_attr)
        # A trial stopped at max_t has finished; after a resume it reports its final result
        # again without training (see trainable.run_trial).
        if action == TrialScheduler.STOP and iteration is not None and iteration < self.max_t:
            self.stopped_trials[trial.trial_id] = {
                "config": _config_key(trial),
                "iteration": iteration,
                "result": {key: value for key, value in result.items() if key != "config"},
            }
        self._persist()  # before Tune acts on the decision
        return action

    def on_trial_complete(
        self, tune_controller: TuneController, trial: Trial, result: dict[str, Any]
    ) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self._persist()

    def on_trial_remove(self, tune_controller: TuneController, trial: Trial) -> None:
        super().on_trial_remove(tune_controller, trial)
        self._persist()

    def was_stopped(self, trial: Trial) -> bool:
        return trial.trial_id in self.stopped_trials

    def _claim_suggested_again(self, trials: list[Trial]) -> None:
        """A stopped trial that Tune's snapshot did not hold at all was suggested again after
        the resume, under a new id when the searcher draws ids at random (Optuna, HyperOpt):
        its stop passes to the first unstopped trial of the same sampled config."""
        known = {trial.trial_id for trial in trials}
        missing = {r["config"]: tid for tid, r in self.stopped_trials.items() if tid not in known}
        for trial in trials:
            if not missing:
                return
            if trial.status != Trial.PENDING or self.was_stopped(trial):
                continue
            tid = missing.pop(_config_key(trial), None)
            if tid is not None:
                self.stopped_trials[trial.trial_id] = self.stopped_trials.pop(tid)
                self._persist()

    def _reload_once(self) -> None:
        """Load the state a killed driver left, once (a new sweep has none yet)."""
        if self.reloaded:
            return
        path = self.state_path
        if Path(path).is_file():
            self.restore(path)  # Ray's: the saved attributes replace these
        self.state_path = path
        self.reloaded = True

    def _persist(self) -> None:
        # Written whole, then renamed: a driver killed mid-write leaves the previous state.
        partial = f"{self.state_path}.partial"
        self.save(partial)
        os.replace(partial, self.state_path)


def _config_key(trial: Trial) -> str:
    return json.dumps(trial.config, sort_keys=True, default=str)
