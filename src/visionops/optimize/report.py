"""The comparison every variant ends up in: ``optimize_report.json``, ``.md`` and a PNG.

One row per variant (the FP32 source first). Headline figures are the serving ones: latency at
batch 1 on one thread (what the promotion gate measures by default) and throughput at batch 64
on every core; the per-thread figures are in each row's ``timings``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionops.optimize.measure import Timing

REPORT_JSON = "optimize_report.json"
REPORT_MD = "optimize_report.md"
REPORT_PNG = "optimize_pareto.png"
SOURCE_ROW = "source"  # the FP32 PyTorch model the variants are compared with


@dataclass
class Row:
    method: str
    name: str
    runtime: str
    precision: str
    model_uri: str | None = None
    version: str | None = None
    run_id: str | None = None
    size_mb: float | None = None
    params: int | None = None
    nonzero_params: int | None = None
    accuracy: float | None = None  # on the validation split
    accuracy_delta: float | None = None  # against the source, same split, same protocol
    test_accuracy: float | None = None
    timings: list[Timing] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    finetune_run_id: str | None = None
    pareto: bool = False

    def timing(self, threads: int) -> Timing | None:
        return next((t for t in self.timings if t.threads == threads), None)

    @property
    def serving(self) -> Timing | None:
        """One thread (the promotion gate's default)."""
        return min(self.timings, key=lambda t: t.threads) if self.timings else None

    @property
    def batch(self) -> Timing | None:
        """Every core."""
        return max(self.timings, key=lambda t: t.threads) if self.timings else None

    def summary(self) -> dict[str, Any]:
        """The row as ``--json`` prints it."""
        serving, batch = self.serving, self.batch
        return {
            "method": self.method,
            "name": self.name,
            "runtime": self.runtime,
            "precision": self.precision,
            "model_uri": self.model_uri,
            "version": self.version,
            "size_mb": self.size_mb,
            "params": self.params,
            "nonzero_params": self.nonzero_params,
            "accuracy": self.accuracy,
            "accuracy_delta": self.accuracy_delta,
            "test_accuracy": self.test_accuracy,
            "latency_ms_p50_b1": serving.latency_ms_p50_b1 if serving else None,
            "latency_ms_p95_b1": serving.latency_ms_p95_b1 if serving else None,
            "images_per_sec_b64": batch.images_per_sec_b64 if batch else None,
            "skipped": self.skipped,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "run_id": self.run_id,
            "finetune_run_id": self.finetune_run_id,
            "timings": [t.as_dict() for t in self.timings],
            "notes": self.notes,
            "pareto": self.pareto,
        }


def mark_pareto(rows: list[Row]) -> None:
    """Mark the rows no other row beats on both accuracy and one-thread p95 latency."""
    measured = [r for r in rows if r.accuracy is not None and r.serving is not None]
    for row in measured:
        row.pareto = not any(_dominates(other, row) for other in measured if other is not row)


def _dominates(a: Row, b: Row) -> bool:
    assert a.accuracy is not None and b.accuracy is not None and a.serving and b.serving
    la, lb = a.serving.latency_ms_p95_b1, b.serving.latency_ms_p95_b1
    return a.accuracy >= b.accuracy and la <= lb and (a.accuracy > b.accuracy or la < lb)


def speedups(rows: list[Row]) -> dict[str, dict[str, float]]:
    """Per row: batch-1 and batch-64 speed against the source, and against FP32 on the same
    runtime (so the runtime's share and quantisation's share are both visible)."""
    source = next((r for r in rows if r.method == SOURCE_ROW), None)
    fp32_by_runtime = {
        r.runtime: r
        for r in rows
        if r.precision == "fp32" and r.timings and r.method in (SOURCE_ROW, "onnx", "openvino")
    }
    result: dict[str, dict[str, float]] = {}
    for row in rows:
        if not row.timings:
            continue
        figures: dict[str, float] = {}
        for label, base in (
            ("source", source),
            ("same_runtime_fp32", fp32_by_runtime.get(row.runtime)),
        ):
            if base is None or base is row or not base.timings:
                continue
            figures.update(_ratios(row, base, label))
        result[row.name] = figures
    return result


def _ratios(row: Row, base: Row, label: str) -> dict[str, float]:
    assert row.serving and row.batch and base.serving and base.batch
    return {
        f"b1_speedup_vs_{label}": base.serving.latency_ms_p50_b1 / row.serving.latency_ms_p50_b1,
        f"b64_speedup_vs_{label}": row.batch.images_per_sec_b64 / base.batch.images_per_sec_b64,
    }


@dataclass
class Report:
    source_uri: str
    parent_run_id: str | None
    threads: tuple[int, ...]
    machine: dict[str, Any]
    rows: list[Row]
    selected: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source_uri,
            "parent_run_id": self.parent_run_id,
            "threads": list(self.threads),
            "machine": self.machine,
            "accuracy_protocol": "top-1 on the whole split, no test-time augmentation",
            "variants": [r.as_dict() for r in self.rows],
            "speedups": speedups(self.rows),
            "selected": self.selected,
        }

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        json_path, md_path, png_path = folder / REPORT_JSON, folder / REPORT_MD, folder / REPORT_PNG
        json_path.write_text(json.dumps(self.as_dict(), indent=2))
        md_path.write_text(self.markdown())
        self.pareto_figure(png_path)
        return [json_path, md_path, png_path]

    def markdown(self) -> str:
        fast = speedups(self.rows)
        one, most = min(self.threads), max(self.threads)
        lines = [
            f"# Optimisation report: {self.source_uri}",
            "",
            f"Machine: {self.machine.get('description', 'unknown')}. Accuracy: top-1 on the "
            "validation split, no test-time augmentation. Latency: one image, "
            f"{one} thread{'s' if one > 1 else ''}; throughput: batch 64, {most} threads. "
            "Pareto: no other row is both at least as accurate and at least as fast (p95).",
            "",
            "| Variant | Runtime | Precision | Version | Accuracy | Δ vs FP32 | Size (MB) | "
            "Params | Non-zero | p50 / p95 / p99 b1 (ms) | img/s b64 | ×b1 src | ×b64 src | "
            "×b64 same-runtime FP32 | Pareto |",
            "|" + "---|" * 15,
        ]
        for row in self.rows:
            if row.skipped:
                lines.append(f"| {row.name} | {row.runtime} | - | - | {row.skipped} |" + " |" * 10)
                continue
            s, b, f = row.serving, row.batch, fast.get(row.name, {})
            latency = (
                (
                    f"{s.latency_ms_p50_b1:.2f} / {s.latency_ms_p95_b1:.2f} / "
                    f"{s.latency_ms_p99_b1:.2f}"
                )
                if s
                else "-"
            )
            lines.append(
                f"| {row.name} | {row.runtime} | {row.precision} | {row.version or '-'} | "
                f"{_pct(row.accuracy)} | {_delta(row.accuracy_delta)} | {_num(row.size_mb, 2)} | "
                f"{_int(row.params)} | {_int(row.nonzero_params)} | {latency} | "
                f"{_num(b.images_per_sec_b64 if b else None, 0)} | "
                f"{_x(f.get('b1_speedup_vs_source'))} | {_x(f.get('b64_speedup_vs_source'))} | "
                f"{_x(f.get('b64_speedup_vs_same_runtime_fp32'))} | {'yes' if row.pareto else ''} |"
            )
        lines += [
            "",
            "## Per thread count",
            "",
            "| Variant | Threads | p50 b1 (ms) | p95 b1 (ms) | p99 b1 (ms) | img/s b64 |",
            "|---|---|---|---|---|---|",
        ]
        for row in self.rows:
            for t in row.timings:
                lines.append(
                    f"| {row.name} | {t.threads} | {t.latency_ms_p50_b1:.2f} | "
                    f"{t.latency_ms_p95_b1:.2f} | {t.latency_ms_p99_b1:.2f} | "
                    f"{t.images_per_sec_b64:.0f} |"
                )
        notes = [(row.name, note) for row in self.rows for note in row.notes]
        if notes:
            lines += ["", "## Notes", ""] + [f"- **{name}**: {note}" for name, note in notes]
        if self.selected:
            lines += ["", "## Selection", "", str(self.selected.get("message", ""))]
        return "\n".join(lines) + "\n"

    def pareto_figure(self, path: Path) -> None:
        from visionops.tracking import plots

        figure = plots.pareto_front(
            [
                (r.name, r.serving.latency_ms_p95_b1, r.accuracy, r.pareto)
                for r in self.rows
                if r.serving and r.accuracy is not None
            ],
            title=f"{self.source_uri}: accuracy against latency",
            xlabel=f"p95 latency, batch 1, {min(self.threads)} thread(s) (ms)",
        )
        figure.savefig(path, dpi=120, bbox_inches="tight")
        plots.close(figure)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _delta(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.2f} pt"


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _int(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
