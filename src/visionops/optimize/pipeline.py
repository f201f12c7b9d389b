"""``optimize_model``: build every requested variant, measure each the same way, report, register.

    >>> from visionops.optimize.pipeline import optimize_model
    >>> from visionops.optimize.options import OptimizeOptions
    >>> result = optimize_model("models:/vision-classifier/1",
    ...                         OptimizeOptions(methods=("onnx", "int8-static")))  # doctest: +SKIP

One parent MLflow run holds the report; each variant gets a child run with its figures and its
logged model, registered as a new version of the source's registered model. A method that fails
becomes a "skipped: reason" row and the others still run.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from visionops import names
from visionops.config import Override, TrackingConfig
from visionops.data import split_images
from visionops.errors import ConfigError
from visionops.optimize.measure import EvalImages, measure
from visionops.optimize.method import METHODS, OptimizeContext
from visionops.optimize.options import OptimizeOptions
from visionops.optimize.registration import log_and_register, row_metrics
from visionops.optimize.report import SOURCE_ROW, Report, Row, mark_pareto
from visionops.optimize.source import build_context
from visionops.optimize.variant import Variant, count_parameters
from visionops.tracking import RunTracker
from visionops.tracking.client import run_experiment_name, tracking_client

logger = logging.getLogger(__name__)


@dataclass
class OptimizeResult:
    parent_run_id: str | None
    report_path: Path  # optimize_report.json
    report: Report

    def as_json(self) -> dict[str, Any]:
        return {
            "parent_run_id": self.parent_run_id,
            "report": str(self.report_path),
            "variants": [row.summary() for row in self.report.rows],
            "selected": self.report.selected,
        }


def check_methods(methods: tuple[str, ...]) -> None:
    """Unknown names fail before any work, listing the known ones."""
    import visionops.optimize.methods  # noqa: F401  (registers the methods)

    if not methods:
        raise ConfigError(f"no methods given; known: {', '.join(METHODS.names())}")
    for name in methods:
        METHODS.get(name)


def optimize_model(
    model_uri: str,
    options: OptimizeOptions,
    tracking_uri: str | None = None,
    data_overrides: list[Override] | None = None,
    output_dir: Path = Path("outputs/optimize"),
    experiment: str | None = None,
) -> OptimizeResult:
    """Optimise the registered model at ``model_uri`` with ``options.methods``.

    Raises:
        ConfigError, RegistryError, VisionOpsError: bad input (an unknown method, URI or alias,
            too few calibration images, data with other classes), before any variant is built.
    """
    check_methods(options.methods)
    client = tracking_client(tracking_uri)
    uri = client.tracking_uri
    workdir = output_dir / time.strftime("%Y%m%d-%H%M%S")
    ctx = build_context(model_uri, options, workdir, uri, data_overrides, experiment)
    ctx.calibration_images  # noqa: B018  (too few images fail here, before any run starts)
    assert ctx.source_name is not None and ctx.source_version is not None
    pinned = f"models:/{ctx.source_name}/{ctx.source_version}"
    experiment = experiment or run_experiment_name(client, ctx.source.run_id)

    parent = RunTracker(
        _tracking(uri, experiment, f"optimize-{ctx.source_name}-v{ctx.source_version}")
    )
    parent_id = parent.start(
        params=_params(options, pinned), tags={names.OPTIMIZED_MODEL_URI_TAG: pinned}
    )
    ctx.parent_run_id = parent_id
    status = "FAILED"
    try:
        splits = _eval_splits(ctx)
        source = Variant(SOURCE_ROW, SOURCE_ROW, "torch", "fp32", module=ctx.model)
        rows = [_measured_row(source, ctx, splits)]
        rows[0].model_uri, rows[0].version = pinned, ctx.source_version
        for method in options.methods:
            for variant in _build(method, ctx):
                row = _measured_row(variant, ctx, splits, baseline=rows[0])
                rows.append(row)
                if row.skipped is None:
                    _record_variant(variant, row, ctx, experiment, uri)
        mark_pareto(rows)
        report = Report(pinned, parent_id, options.threads, describe_machine(), rows)
        if options.select_for_latency_ms is not None:
            report.selected = select_candidate(rows, options.select_for_latency_ms, ctx, uri)
        paths = report.write(workdir)
        for path in paths:
            parent.log_artifact(path)
        status = "FINISHED"
        return OptimizeResult(parent_id, paths[0], report)
    except KeyboardInterrupt:
        status = "KILLED"  # the versions registered so far are complete: each in one call
        raise
    finally:
        parent.end(status)


def _build(method: str, ctx: OptimizeContext) -> list[Variant]:
    logger.info("optimize: %s", method)
    try:
        return METHODS.get(method).build(ctx)
    except Exception as exc:  # a method's failure must not stop the others
        logger.warning(
            "method %s failed: %s",
            method,
            _first_line(exc),
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )
        return [Variant.skip(method, "-", f"skipped: {_first_line(exc)}")]


def _measured_row(
    variant: Variant,
    ctx: OptimizeContext,
    splits: dict[str, EvalImages],
    baseline: Row | None = None,
) -> Row:
    row = Row(
        method=variant.method,
        name=variant.name,
        runtime=variant.runtime,
        precision=variant.precision,
        notes=list(variant.notes),
        skipped=variant.skipped,
        finetune_run_id=variant.finetune_run_id,
    )
    if variant.skipped:
        return row
    try:
        accuracies, row.timings = measure(variant, splits, ctx.options)
    except Exception as exc:  # a runtime that cannot run the file: a row, not a crash
        row.skipped = f"skipped: could not run on {variant.runtime}: {_first_line(exc)}"
        return row
    row.accuracy, row.test_accuracy = accuracies["val"], accuracies.get("test")
    if baseline is not None and baseline.accuracy is not None:
        row.accuracy_delta = row.accuracy - baseline.accuracy
    size = variant.size_bytes()
    row.size_mb = None if size is None else size / 1e6
    if variant.params is not None:
        row.params, row.nonzero_params = variant.params, variant.nonzero_params
    elif variant.module is not None and variant.loggable_module is None:
        row.params, row.nonzero_params = count_parameters(variant.module)  # an eager network
    else:
        # A quantised file or graph holds the source's weights in fewer bits.
        row.params, row.nonzero_params = count_parameters(ctx.model)
    return row


def _record_variant(
    variant: Variant, row: Row, ctx: OptimizeContext, experiment: str | None, uri: str
) -> None:
    """The variant's child run: its figures, its model, its registered version."""
    assert ctx.source_name is not None and ctx.source_version is not None
    tracker = RunTracker(_tracking(uri, experiment, variant.name, ctx.parent_run_id))
    run_id = tracker.start(
        params={
            "method": variant.method,
            "runtime": variant.runtime,
            "precision": variant.precision,
            "source_model_uri": f"models:/{ctx.source_name}/{ctx.source_version}",
        },
        tags={
            names.VARIANT_TAG: variant.name,
            names.SOURCE_VERSION_TAG: ctx.source_version,
            names.RUNTIME_TAG: variant.runtime,
        },
    )
    row.run_id = run_id
    status = "FAILED"
    try:
        tracker.log_metrics(row_metrics(row), step=0)
        tracker.flush()
        assert run_id is not None
        log_and_register(
            variant,
            row,
            run_id,
            ctx.example(4),
            ctx.source_name,
            ctx.source_version,
            uri,
            classes=ctx.data.classes,
            tta=ctx.source.config.data.tta,
        )
        status = "FINISHED"
    finally:
        tracker.end(status)


def select_candidate(
    rows: list[Row], budget_ms: float, ctx: OptimizeContext, uri: str
) -> dict[str, Any]:
    """Point ``candidate`` at the most accurate registered version whose one-thread p95 at
    batch 1 is within ``budget_ms`` (ties: the faster); none fits: nothing moves."""
    alias = names.CANDIDATE_ALIAS
    timed = [(r, r.serving) for r in rows if r.version and r.serving and r.accuracy is not None]
    fitting = [(r, t) for r, t in timed if t.latency_ms_p95_b1 <= budget_ms]
    if not fitting:
        message = f"no registered variant has a p95 batch-1 latency within {budget_ms:g} ms"
        if timed:
            fastest, timing = min(timed, key=lambda pair: pair[1].latency_ms_p95_b1)
            message += f" (the fastest, {fastest.name}, has {timing.latency_ms_p95_b1:.2f} ms)"
        message += f"; alias {alias!r} not moved"
        return {"alias": alias, "version": None, "variant": None, "message": message}
    chosen, timing = max(fitting, key=lambda pair: (pair[0].accuracy, -pair[1].latency_ms_p95_b1))
    assert ctx.source_name is not None and chosen.version is not None
    assert chosen.accuracy is not None
    tracking_client(uri).set_registered_model_alias(ctx.source_name, alias, chosen.version)
    message = (
        f"alias {alias!r} -> version {chosen.version} ({chosen.name}): the most accurate "
        f"({100 * chosen.accuracy:.2f}%) of the {len(fitting)} within {budget_ms:g} ms p95 "
        f"(its p95: {timing.latency_ms_p95_b1:.2f} ms)"
    )
    return {"alias": alias, "version": chosen.version, "variant": chosen.name, "message": message}


def _eval_splits(ctx: OptimizeContext) -> dict[str, EvalImages]:
    splits: dict[str, EvalImages] = {}
    for name in ("val", "test"):
        if name in ctx.data.split_names:
            images, labels = split_images(ctx.data, name)
            splits[name] = EvalImages(images.numpy(), labels.numpy())
    return splits


def _tracking(
    uri: str, experiment: str | None, run_name: str, parent: str | None = None
) -> TrackingConfig:
    return TrackingConfig(
        tracking_uri=uri,
        experiment=experiment,
        run_name=run_name,
        parent_run_id=parent,
        system_metrics=False,
    )


def _params(options: OptimizeOptions, source_uri: str) -> dict[str, str]:
    return {
        "source_model_uri": source_uri,
        "methods": ",".join(options.methods),
        "calibration_images": str(options.calibration_images),
        "calibration_method": options.calibration_method,
        "finetune_epochs": str(options.finetune_epochs),
        "finetune_lr_fraction": str(options.finetune_lr_fraction),
        "prune_ratio": str(options.prune_ratio),
        "opset": str(options.opset),
        "threads": ",".join(map(str, options.threads)),
        "latency_runs": str(options.latency_runs),
        "select_for_latency_ms": str(options.select_for_latency_ms),
    }


def describe_machine() -> dict[str, Any]:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for package in ("torch", "onnxruntime", "openvino", "nncf", "torchao", "torch-pruning"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    cores = os.cpu_count()
    runtimes = ", ".join(f"{package} {v}" for package, v in versions.items() if v)
    return {
        "cpu": cpu,
        "cores": cores,
        "versions": versions,
        "description": f"{cpu}, {cores} cores ({runtimes})",
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
