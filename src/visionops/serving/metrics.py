"""The server's Prometheus metrics, named once (the monitoring rules and dashboards import
these names rather than spelling them again).

Each app gets its own ``CollectorRegistry``, so several servers in one process (tests) do not
share counts. With ``--workers N`` every worker process writes to prometheus_client's
multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``, set by ``visionops serve`` before the
workers start) and ``/metrics`` answers the sum over the workers.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from visionops import env

PREFIX = "visionops_serving_"
REQUESTS = PREFIX + "requests_total"
REQUEST_DURATION = PREFIX + "request_duration_seconds"
QUEUE_WAIT = PREFIX + "queue_wait_seconds"
INFERENCE_DURATION = PREFIX + "inference_duration_seconds"
PREDICTIONS = PREFIX + "predictions_total"
BATCH_SIZE = PREFIX + "batch_size"
QUEUE_DEPTH = PREFIX + "queue_depth"
ERRORS = PREFIX + "errors_total"
MODEL_INFO = PREFIX + "model_info"
TOP1_CONFIDENCE = PREFIX + "top1_confidence"
RELOADS = PREFIX + "model_reloads_total"
SHADOW_IMAGES = PREFIX + "shadow_images_total"
SHADOW_AGREEMENTS = PREFIX + "shadow_agreements_total"
SHADOW_LATENCY = PREFIX + "shadow_latency_seconds"
SHADOW_DROPPED = PREFIX + "shadow_dropped_images_total"

#: Prometheus' exposition format, the ``Content-Type`` of ``/metrics``.
CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def _suffixless(name: str, suffix: str) -> str:
    # prometheus_client appends _total to counters itself; the constants above are the names
    # a query sees.
    return name.removesuffix(suffix)


class ServingMetrics:
    """Every metric of one server."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            _suffixless(REQUESTS, "_total"),
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            REQUEST_DURATION,
            "Time from request to response, by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            QUEUE_WAIT,
            "Time an image waited in the batching queue before its forward pass started.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            INFERENCE_DURATION,
            "Time of one batched forward pass, by model version and role.",
            ["version", "role"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # By version, unlike the HTTP counters: what the alert that rolls a version back reads,
        # so failures of the version it left do not count against the one it restored.
        self.predictions = Counter(
            _suffixless(PREDICTIONS, "_total"),
            "Images through a forward pass, by model version, role and outcome (ok, or error: "
            "the model raised and the request failed).",
            ["version", "role", "outcome"],
            registry=r,
        )
        self.batch_size = Histogram(
            BATCH_SIZE,
            "Images per forward pass, by role (production or shadow).",
            ["role"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            QUEUE_DEPTH,
            "Images submitted and not yet answered, by role.",
            ["role"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.errors = Counter(
            _suffixless(ERRORS, "_total"),
            "Refused or failed requests, by kind (unsupported_image, queue_full, ...).",
            ["kind"],
            registry=r,
        )
        self.model_info = Gauge(
            MODEL_INFO,
            "1 for each model version this server answers with, by role.",
            ["name", "version", "alias", "backend", "role"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self.top1_confidence = Histogram(
            TOP1_CONFIDENCE,
            "Probability of the predicted class, per image, by model version: the drift signal.",
            ["version"],
            buckets=_CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.reloads = Counter(
            _suffixless(RELOADS, "_total"),
            "Model loads after the alias moved, by role and result (success or failure).",
            ["role", "result"],
            registry=r,
        )
        self.shadow_images = Counter(
            _suffixless(SHADOW_IMAGES, "_total"),
            "Images the shadow model also answered, by production and shadow version.",
            ["production_version", "shadow_version"],
            registry=r,
        )
        self.shadow_agreements = Counter(
            _suffixless(SHADOW_AGREEMENTS, "_total"),
            "Shadow images whose top-1 class equals production's; the agreement rate is this "
            "over " + SHADOW_IMAGES + ".",
            ["production_version", "shadow_version"],
            registry=r,
        )
        self.shadow_latency = Histogram(
            SHADOW_LATENCY,
            "Time the shadow model took to answer a request's images, by shadow version.",
            ["shadow_version"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_dropped = Counter(
            _suffixless(SHADOW_DROPPED, "_total"),
            "Images not run on the shadow model because its queue was full.",
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text ``/metrics`` answers: this registry's, or every worker's when the server
        runs several processes."""
        if env.PROMETHEUS_MULTIPROC_DIR.is_set():
            from prometheus_client import multiprocess

            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)
            return generate_latest(combined)
        return generate_latest(self.registry)
