"""benchmarks/compare.py, the perf-regression gate, run as the workflow runs it: a process on
JSON files (here in tmp_path), judged by its exit status, its table and its messages."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deploy_tools import ROOT

SCRIPT = ROOT / "benchmarks" / "compare.py"
BASELINE = {
    "comment": "test baseline",
    "benchmarks": {
        "serving": {
            "machine": "test-machine",
            "date": "2026-01-01",
            "metrics": {
                "ratios.batching/batch-1": {"value": 3.0, "higher_is_better": True},
                "rows.batching.latency_ms.p99": {"value": 100.0, "higher_is_better": False},
            },
        },
        "train_overhead": {
            "machine": "test-machine",
            "date": "2026-01-01",
            "metrics": {"ratio": {"value": 1.0, "higher_is_better": True}},
        },
    },
}


def serving_result(speedup: float | None = 3.0, p99: float = 100.0, **extra: Any) -> dict[str, Any]:
    return {
        "benchmark": "serving",
        "ratios": {"batching/batch-1": speedup},
        "rows": {"batching": {"latency_ms": {"p99": p99}}},
        **extra,
    }


def compare(tmp_path: Path, *results: dict[str, Any] | str, args: tuple[str, ...] = ()):
    """Run compare.py on ``results`` (objects written as JSON, strings as they are) against
    ``tmp_path/baseline.json`` (written from BASELINE unless a test wrote one)."""
    baseline = tmp_path / "baseline.json"
    if not baseline.exists():
        baseline.write_text(json.dumps(BASELINE))
    paths = []
    for i, result in enumerate(results):
        path = tmp_path / f"result-{i}.json"
        path.write_text(result if isinstance(result, str) else json.dumps(result))
        paths.append(str(path))
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--baseline", str(baseline), *args, *paths],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def utc_today() -> str:
    return datetime.datetime.now(datetime.timezone.utc).date().isoformat()


def verdicts(stdout: str) -> dict[str, str]:
    """metric -> verdict, from the printed table."""
    rows = [line.split() for line in stdout.splitlines()[1:] if line.strip()]
    return {row[1]: " ".join(row[-2:]) if row[-1] == "run" else row[-1] for row in rows}


def test_a_regression_within_the_tolerance_passes(tmp_path: Path) -> None:
    result = compare(tmp_path, serving_result(speedup=3.0 * 0.95, p99=105.0))
    assert result.returncode == 0, result.stderr
    assert verdicts(result.stdout) == {
        "ratios.batching/batch-1": "ok",
        "rows.batching.latency_ms.p99": "ok",
        "ratio": "not run",
    }
    assert "-5.0%" in result.stdout


def test_a_regression_beyond_the_tolerance_fails_and_names_the_metric(tmp_path: Path) -> None:
    result = compare(tmp_path, serving_result(speedup=3.0 * 0.89))
    assert result.returncode == 1
    assert verdicts(result.stdout)["ratios.batching/batch-1"] == "REGRESSED"
    assert "serving ratios.batching/batch-1" in result.stderr
    assert "-11.0%" in result.stdout


def test_lower_is_better_metrics_regress_upwards(tmp_path: Path) -> None:
    slower = compare(tmp_path, serving_result(p99=111.0))
    assert slower.returncode == 1
    assert "rows.batching.latency_ms.p99" in slower.stderr
    faster = compare(tmp_path, serving_result(speedup=4.0, p99=50.0))
    assert faster.returncode == 0, faster.stderr
    assert verdicts(faster.stdout)["rows.batching.latency_ms.p99"] == "improved"
    assert verdicts(faster.stdout)["ratios.batching/batch-1"] == "improved"


def test_the_tolerance_is_a_flag(tmp_path: Path) -> None:
    result = serving_result(speedup=3.0 * 0.89)
    assert compare(tmp_path, result, args=("--tolerance", "0.15")).returncode == 0
    strict = compare(tmp_path, serving_result(speedup=3.0 * 0.97), args=("--tolerance", "0.02"))
    assert strict.returncode == 1


def test_a_missing_metric_exits_2(tmp_path: Path) -> None:
    result = serving_result()
    del result["rows"]
    outcome = compare(tmp_path, result)
    assert outcome.returncode == 2
    assert "serving rows.batching.latency_ms.p99" in outcome.stderr
    # A value that is not a number counts as missing.
    assert compare(tmp_path, serving_result(speedup=None)).returncode == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [("not json at all\n", "holds no JSON object"), ("[1, 2]", "expected a JSON object")],
)
def test_a_result_that_is_not_a_json_object_exits_2(
    tmp_path: Path, content: str, message: str
) -> None:
    result = compare(tmp_path, content)
    assert result.returncode == 2 and message in result.stderr


def test_an_unreadable_file_exits_2(tmp_path: Path) -> None:
    absent = tmp_path / "absent.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--baseline", str(absent), str(absent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and f"cannot read {absent}" in result.stderr


def test_a_benchmark_without_a_baseline_exits_2(tmp_path: Path) -> None:
    result = compare(tmp_path, {"benchmark": "vs_lightning", "ratio": 1.0})
    assert result.returncode == 2
    assert "no baseline for benchmark(s) vs_lightning" in result.stderr


def test_the_last_json_line_of_a_benchmark_run_is_its_result(tmp_path: Path) -> None:
    # Ray Tune prints its trial table to stdout ahead of the benchmark's own JSON line.
    output = "== Status ==\n{not the result\n" + json.dumps(serving_result(speedup=2.0)) + "\n"
    result = compare(tmp_path, output)
    assert result.returncode == 1
    assert verdicts(result.stdout)["ratios.batching/batch-1"] == "REGRESSED"


def test_update_rewrites_the_baseline(tmp_path: Path) -> None:
    measured = serving_result(speedup=2.0, p99=250.0, machine={"cpu": "x86_64", "cores": 4})
    before = utc_today()
    assert compare(tmp_path, measured, args=("--update",)).returncode == 0
    dates = {before, utc_today()}
    updated = json.loads((tmp_path / "baseline.json").read_text())
    serving = updated["benchmarks"]["serving"]
    assert serving["metrics"] == {
        "ratios.batching/batch-1": {"value": 2.0, "higher_is_better": True},
        "rows.batching.latency_ms.p99": {"value": 250.0, "higher_is_better": False},
    }
    assert serving["machine"] == {"cpu": "x86_64", "cores": 4}
    assert serving["date"] in dates
    # Benchmarks without a result and the free text stay as they were.
    assert updated["benchmarks"]["train_overhead"] == BASELINE["benchmarks"]["train_overhead"]
    assert updated["comment"] == "test baseline"
    # The same figures now pass, where they failed against the old baseline.
    assert compare(tmp_path, measured).returncode == 0


def test_update_with_a_missing_metric_leaves_the_baseline_alone(tmp_path: Path) -> None:
    result = serving_result()
    del result["ratios"]
    assert compare(tmp_path, result, args=("--update",)).returncode == 2
    assert json.loads((tmp_path / "baseline.json").read_text()) == BASELINE


def test_markdown_summary_is_appended(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    result = compare(tmp_path, serving_result(), args=("--markdown", str(summary)))
    assert result.returncode == 0
    text = summary.read_text()
    assert text.startswith("earlier step\n### Benchmarks against the baseline (tolerance 10%)")
    assert "| serving | ratios.batching/batch-1 | higher | 3 | 3 | +0.0% | ok |" in text


def nested(dotted: str, value: float) -> dict[str, Any]:
    head, _, rest = dotted.partition(".")
    return {head: nested(rest, value) if rest else value}


def merge(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def test_the_repository_baseline_is_well_formed(tmp_path: Path) -> None:
    """benchmarks/baseline.json compares clean against results equal to its own values."""
    baseline = json.loads((ROOT / "benchmarks" / "baseline.json").read_text())
    (tmp_path / "baseline.json").write_text(json.dumps(baseline))
    results = []
    for name, entry in baseline["benchmarks"].items():
        result: dict[str, Any] = {"benchmark": name}
        for metric, spec in entry["metrics"].items():
            merge(result, nested(metric, spec["value"]))
        results.append(result)
    outcome = compare(tmp_path, *results)
    assert outcome.returncode == 0, outcome.stderr
    assert set(verdicts(outcome.stdout).values()) == {"ok"}
