"""Compare benchmark results with a baseline; fail when a metric regresses beyond a tolerance.

    python benchmarks/compare.py --baseline benchmarks/baseline.json RESULT.json [RESULT.json ...]
    python benchmarks/compare.py --baseline benchmarks/baseline.json --tolerance 0.05 RESULT.json
    python benchmarks/compare.py --baseline benchmarks/baseline.json --update RESULT.json ...

A result file holds the JSON object a script of benchmarks/ printed (``python
benchmarks/train_overhead.py > RESULT.json``); when a library wrote lines to stdout before it, the
file's last line is taken if it is a JSON object. The object's ``"benchmark"`` field names the
benchmark (the file's stem when it has none).

The baseline is a JSON object::

    {
      "comment": "free text",
      "benchmarks": {
        "train_overhead": {
          "machine": "where the values were measured",
          "date": "2026-11-26",
          "metrics": {
            "ratio": {"value": 1.0, "higher_is_better": true},
            "end_to_end.ratio": {"value": 0.985, "higher_is_better": true}
          }
        }
      }
    }

A metric's name is a dotted path into the result: ``end_to_end.ratio`` is
``result["end_to_end"]["ratio"]`` (keys holding a dot cannot be named). Only metrics listed in the
baseline are compared, so ratios measured side by side in one run (which move little from one
machine to another) belong there, absolute throughputs do not. A benchmark of the baseline with no
result file given is reported as not run and does not fail the comparison.

A metric regresses when it is worse than its baseline value by more than ``--tolerance`` of that
value (default 0.10): below ``value * (1 - tolerance)`` when higher is better, above
``value * (1 + tolerance)`` when lower is better. ``--update`` writes the results' values (and
their ``machine`` field and today's date) into the baseline instead of failing.

Prints a table of every compared metric; ``--markdown FILE`` also appends it as Markdown (in CI:
``--markdown "$GITHUB_STEP_SUMMARY"``). Uses the standard library only, so any Python 3.10 runs it.

Exit status: 0 every metric within the tolerance (or the baseline updated); 1 a metric regressed;
2 a file that cannot be read or parsed, a result for a benchmark the baseline does not know, two
results for one benchmark, or a baselined metric missing from its result or not a number.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TOLERANCE = 0.10
EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2


class CompareError(Exception):
    """A file or a value that makes the comparison impossible (exit status 2)."""


@dataclass(frozen=True)
class Row:
    benchmark: str
    metric: str
    baseline: float
    current: float | None
    higher_is_better: bool
    verdict: str  # ok, improved, REGRESSED, MISSING, not run

    @property
    def change(self) -> float | None:
        if self.current is None:
            return None
        return (self.current - self.baseline) / abs(self.baseline)


def read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as error:
        raise CompareError(f"cannot read {path}: {error.strerror or error}") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    # A benchmark's own JSON is its last line; Ray or MLflow may have printed lines above it.
    lines = text.strip().splitlines()
    try:
        last = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        last = None
    if not isinstance(last, dict):
        raise CompareError(f"{path} holds no JSON object (neither the file nor its last line)")
    return last


def load_baseline(path: Path) -> dict[str, Any]:
    baseline = read_json(path)
    if not isinstance(baseline, dict) or not isinstance(baseline.get("benchmarks"), dict):
        raise CompareError(f"{path}: expected an object with a 'benchmarks' mapping")
    if not baseline["benchmarks"]:
        raise CompareError(f"{path}: 'benchmarks' is empty")
    for name, entry in baseline["benchmarks"].items():
        metrics = entry.get("metrics") if isinstance(entry, dict) else None
        if not isinstance(metrics, dict) or not metrics:
            raise CompareError(f"{path}: benchmark {name!r} needs a non-empty 'metrics' mapping")
        for metric, spec in metrics.items():
            where = f"{path}: {name} {metric}"
            if not isinstance(spec, dict) or not isinstance(spec.get("higher_is_better"), bool):
                raise CompareError(f"{where}: needs 'higher_is_better': true or false")
            if as_number(spec.get("value")) in (None, 0.0):
                raise CompareError(f"{where}: 'value' must be a non-zero number")
    return baseline


def load_results(paths: list[Path]) -> dict[str, tuple[Path, dict[str, Any]]]:
    results: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in paths:
        result = read_json(path)
        if not isinstance(result, dict):
            raise CompareError(f"{path}: expected a JSON object, found {type(result).__name__}")
        name = str(result.get("benchmark") or path.stem)
        if name in results:
            raise CompareError(f"two results for benchmark {name!r}: {results[name][0]}, {path}")
        results[name] = (path, result)
    return results


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def lookup(result: dict[str, Any], dotted: str) -> float | None:
    value: Any = result
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return as_number(value)


def compare(
    baseline: dict[str, Any], results: dict[str, tuple[Path, dict[str, Any]]], tolerance: float
) -> list[Row]:
    known = baseline["benchmarks"]
    unknown = sorted(set(results) - set(known))
    if unknown:
        raise CompareError(
            f"no baseline for benchmark(s) {', '.join(unknown)}; the baseline has "
            f"{', '.join(sorted(known))}"
        )
    rows = []
    for name, entry in known.items():
        for metric, spec in entry["metrics"].items():
            value, higher = float(spec["value"]), spec["higher_is_better"]
            if name not in results:
                rows.append(Row(name, metric, value, None, higher, "not run"))
                continue
            current = lookup(results[name][1], metric)
            if current is None:
                rows.append(Row(name, metric, value, None, higher, "MISSING"))
                continue
            worse = (value - current if higher else current - value) / abs(value)
            verdict = (
                "REGRESSED" if worse > tolerance else "improved" if -worse > tolerance else "ok"
            )
            rows.append(Row(name, metric, value, current, higher, verdict))
    return rows


def cells(row: Row) -> list[str]:
    change = "" if row.change is None else f"{row.change:+.1%}"
    current = "" if row.current is None else f"{row.current:g}"
    better = "higher" if row.higher_is_better else "lower"
    return [row.benchmark, row.metric, better, f"{row.baseline:g}", current, change, row.verdict]


HEADER = ["benchmark", "metric", "better", "baseline", "current", "change", "verdict"]


def text_table(rows: list[Row]) -> str:
    table = [HEADER, *(cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def markdown_table(rows: list[Row], tolerance: float) -> str:
    lines = [
        f"### Benchmarks against the baseline (tolerance {tolerance:.0%})",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *("| " + " | ".join(cells(row)) + " |" for row in rows),
    ]
    return "\n".join(lines) + "\n"


def update(baseline: dict[str, Any], results: dict[str, tuple[Path, dict[str, Any]]]) -> None:
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    for name, (_, result) in results.items():
        entry = baseline["benchmarks"][name]
        for metric, spec in entry["metrics"].items():
            spec["value"] = lookup(result, metric)
        entry["date"] = today
        if "machine" in result:
            entry["machine"] = result["machine"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="JSON printed by a benchmark")
    parser.add_argument(
        "--baseline", type=Path, required=True, help="e.g. benchmarks/baseline.json"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"allowed relative regression (default {DEFAULT_TOLERANCE})",
    )
    parser.add_argument("--update", action="store_true", help="write the results into the baseline")
    parser.add_argument("--markdown", type=Path, help="append the table as Markdown to this file")
    args = parser.parse_args(argv)
    if not 0 <= args.tolerance < 1:
        parser.error(f"--tolerance must be in [0, 1), got {args.tolerance}")

    try:
        baseline = load_baseline(args.baseline)
        results = load_results(args.results)
        rows = compare(baseline, results, args.tolerance)
    except CompareError as error:
        print(f"compare.py: {error}", file=sys.stderr)
        return EXIT_ERROR

    print(text_table(rows))
    if args.markdown:
        with args.markdown.open("a") as summary:
            summary.write(markdown_table(rows, args.tolerance))
    missing = [f"{row.benchmark} {row.metric}" for row in rows if row.verdict == "MISSING"]
    if missing:
        print(f"missing from the results (or not numbers): {', '.join(missing)}", file=sys.stderr)
        return EXIT_ERROR
    if args.update:
        update(baseline, results)
        args.baseline.write_text(json.dumps(baseline, indent=2) + "\n")
        print(f"updated {args.baseline} from {len(results)} result(s)")
        return EXIT_OK
    regressed = [f"{row.benchmark} {row.metric}" for row in rows if row.verdict == "REGRESSED"]
    if regressed:
        print(
            f"regressed by more than {args.tolerance:.0%}: {', '.join(regressed)}", file=sys.stderr
        )
        return EXIT_REGRESSION
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
