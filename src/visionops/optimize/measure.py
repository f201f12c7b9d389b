"""Accuracy, latency and throughput of a variant, measured the same way for every variant.

Accuracy is on whole splits (validation, and test when the dataset has one), without test-time
augmentation, so the FP32 source is measured by the same rule as its variants. Latency is the
wall time of one image (p50/p95/p99 of ``latency_runs`` passes after a warm-up); throughput is
images per second at batch 64. Both are measured on each thread count of ``options.threads``
(1, and every core) because a serving worker usually runs on one and a batch job on all.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from visionops.optimize.options import OptimizeOptions
from visionops.optimize.runtimes import Predictor, load_predictor, torch_threads
from visionops.optimize.variant import Variant

THROUGHPUT_BATCH = 64
_LATENCY_WARMUP = 10
_THROUGHPUT_WARMUP = 2
_EVAL_BATCH = 256


@dataclass(frozen=True)
class Timing:
    threads: int
    latency_ms_p50_b1: float
    latency_ms_p95_b1: float
    latency_ms_p99_b1: float
    images_per_sec_b64: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class EvalImages:
    """A split as arrays: float32 NCHW images in [0, 1] and integer labels."""

    images: np.ndarray
    labels: np.ndarray


def accuracy(predict: Predictor, split: EvalImages) -> float:
    correct = 0
    for start in range(0, len(split.labels), _EVAL_BATCH):
        logits = predict(split.images[start : start + _EVAL_BATCH])
        correct += int((logits.argmax(axis=1) == split.labels[start : start + _EVAL_BATCH]).sum())
    return correct / len(split.labels)


def time_predictor(
    predict: Predictor, images: np.ndarray, threads: int, options: OptimizeOptions
) -> Timing:
    one = np.ascontiguousarray(images[:1])
    batch = np.ascontiguousarray(np.resize(images, (THROUGHPUT_BATCH, *images.shape[1:])))
    latencies = []
    for _ in range(_LATENCY_WARMUP):
        predict(one)
    for _ in range(options.latency_runs):
        start = time.perf_counter()
        predict(one)
        latencies.append((time.perf_counter() - start) * 1000.0)
    for _ in range(_THROUGHPUT_WARMUP):
        predict(batch)
    start = time.perf_counter()
    for _ in range(options.throughput_batches):
        predict(batch)
    seconds = time.perf_counter() - start
    p50, p95, p99 = np.percentile(np.asarray(latencies), [50, 95, 99])
    return Timing(
        threads=threads,
        latency_ms_p50_b1=float(p50),
        latency_ms_p95_b1=float(p95),
        latency_ms_p99_b1=float(p99),
        images_per_sec_b64=THROUGHPUT_BATCH * options.throughput_batches / seconds,
    )


def measure(
    variant: Variant, splits: dict[str, EvalImages], options: OptimizeOptions
) -> tuple[dict[str, float], list[Timing]]:
    """(accuracy per split, timings per thread count) of ``variant``."""
    accuracies: dict[str, float] = {}
    timings: list[Timing] = []
    most = max(options.threads)
    with torch_threads(most), torch.inference_mode():
        predict = load_predictor(variant, most)
        for name, split in splits.items():
            accuracies[name] = accuracy(predict, split)
    probe = next(iter(splits.values())).images
    for threads in options.threads:
        with torch_threads(threads), torch.inference_mode():
            predict = load_predictor(variant, threads)
            timings.append(time_predictor(predict, probe, threads, options))
    return accuracies, timings
