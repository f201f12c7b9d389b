"""Named sweep sizes for ``visionops tune --preset``; every field is overridable by a flag.

quick       the debug recipe on generated data: a few minutes on 2 CPU cores
default     the quickstart recipe (quarter-width ResNet-9, synthetic data)
extensive   cifar10-fast on CIFAR-10: a GPU's afternoon

Each registers its best trial only if it beats chance by ``chance_margin`` (0.1 for all three).
"""

from __future__ import annotations

from dataclasses import dataclass

from visionops._registry import Registry
from visionops.tuning.algorithms import SchedulerName, SearchName

#: What a best trial must beat chance by to be registered, in accuracy points: 0.1 refuses the
#: 17.5% a sweep of bad trials reaches on 10 classes, and passes any trial that learned.
DEFAULT_CHANCE_MARGIN = 0.1


@dataclass(frozen=True)
class SweepPreset:
    name: str
    description: str
    recipe: str
    num_samples: int
    max_epochs: int
    search: SearchName = "optuna"
    scheduler: SchedulerName = "asha"
    grace_period: int = 1
    reduction_factor: int = 2
    # The best trial is registered only if its val/accuracy beats chance (1/classes) by this.
    chance_margin: float = DEFAULT_CHANCE_MARGIN


PRESETS: Registry[SweepPreset] = Registry("tune preset")
for _preset in (
    SweepPreset(
        "quick",
        "debug recipe on synthetic data, 6 trials of up to 3 epochs (minutes on 2 cores)",
        recipe="debug",
        num_samples=6,
        max_epochs=3,
    ),
    SweepPreset(
        "default",
        "quickstart recipe on synthetic data, 16 trials of up to 4 epochs",
        recipe="quickstart",
        num_samples=16,
        max_epochs=4,
    ),
    SweepPreset(
        "extensive",
        "cifar10-fast on CIFAR-10, 64 trials of up to 10 epochs (one GPU or a cluster)",
        recipe="cifar10-fast",
        num_samples=64,
        max_epochs=10,
        grace_period=2,
        reduction_factor=3,
    ),
):
    PRESETS.register(_preset.name, _preset)


def get_preset(name: str) -> SweepPreset:
    return PRESETS.get(name)
