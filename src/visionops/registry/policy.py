"""The promotion gate's thresholds; no heavy imports, so the CLI parser can read the defaults."""

from __future__ import annotations

from dataclasses import dataclass

from visionops.errors import ConfigError

#: p95 at batch 1 on the promoting machine's CPU, on DEFAULT_LATENCY_THREADS threads. On one
#: core of a busy 2-core machine the
#: exported 32x32 models answer in (p50) about 15 ms (airbench, MobileNetV3-Small), 30 ms
#: (ResNet-9) and 40 ms (ResNet-18): 50 ms accepts them and refuses a model that would need
#: batching or a GPU to answer one image interactively.
DEFAULT_LATENCY_BUDGET_MS = 50.0
DEFAULT_LATENCY_RUNS = 50
#: One thread, as a CPU serving worker runs (one worker per core): the figure then depends on the
#: model and the core, not on how many cores the promoting machine has or how busy they are.
DEFAULT_LATENCY_THREADS = 1
DEFAULT_MAX_ACCURACY_DROP = 0.0


@dataclass(frozen=True)
class PromotionPolicy:
    """What a candidate must meet to take an alias from its current holder."""

    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    """How much lower (a fraction: 0.005 = half a point) the candidate's val/accuracy may be
    than the current holder's."""
    latency_budget_ms: float = DEFAULT_LATENCY_BUDGET_MS
    """Largest accepted p95 CPU latency of one image, in milliseconds."""
    latency_runs: int = DEFAULT_LATENCY_RUNS
    """Timed single-image forward passes (after the warm-up)."""
    latency_threads: int = DEFAULT_LATENCY_THREADS
    """torch intra-op threads during the measurement."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ConfigError(
                f"max accuracy drop must be a fraction between 0 and 1 (0.005 = half a point), "
                f"got {self.max_accuracy_drop}"
            )
        if not self.latency_budget_ms > 0:
            raise ConfigError(
                f"latency budget must be a positive number of milliseconds, "
                f"got {self.latency_budget_ms}"
            )
        if self.latency_threads < 1:
            raise ConfigError(f"latency threads must be at least 1, got {self.latency_threads}")
        if self.latency_runs < 1:
            raise ConfigError(f"latency runs must be at least 1, got {self.latency_runs}")
