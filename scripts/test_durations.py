#!/usr/bin/env python3
r"""Where the suite's time goes, from pytest JUnit XML reports (docs/development.md, "Tests").

    .venv/bin/pytest -n 2 --dist loadgroup --no-loadscope-reorder --ignore=tests/optimize \
        --junitxml=main.xml                          # make test's two pytest runs
    .venv/bin/pytest tests/optimize --junitxml=optimize.xml
    scripts/test_durations.py main.xml optimize.xml  # time per folder, then the 30 slowest
    scripts/test_durations.py main.xml optimize.xml --top 50 --markdown

A test's time is its setup, call and teardown, as pytest-xdist's worker measured it; with two
workers the folders' times add up to about twice the wall time.
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path


def test_times(report: Path) -> dict[str, float]:
    """``{"tests/serving/test_predict.py::test_x": seconds}`` for every test case."""
    times: dict[str, float] = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        name = case.get("name", "")
        if name.rfind("@") > name.rfind("]"):  # "test_x@group": xdist's loadgroup suffix
            name = name.rsplit("@", 1)[0]
        times[f"tests/{module.removeprefix('tests/')}.py::{name}"] = float(case.get("time", 0))
    return times


def folder_of(test: str) -> str:
    parts = test.split("::")[0].split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else parts[0] + "/ (top level)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path, nargs="+", help="pytest --junitxml outputs")
    parser.add_argument("--top", type=int, default=30, help="how many of the slowest tests")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables")
    args = parser.parse_args()

    times = {test: t for report in args.reports for test, t in test_times(report).items()}
    per_folder: dict[str, list[float]] = defaultdict(list)
    for test, seconds in times.items():
        per_folder[folder_of(test)].append(seconds)
    folders = sorted(per_folder.items(), key=lambda item: -sum(item[1]))
    slowest = sorted(times.items(), key=lambda item: -item[1])[: args.top]
    total = sum(times.values())

    if args.markdown:
        print("| Folder | Tests | Seconds |\n|---|---|---|")
        for folder, values in folders:
            print(f"| `{folder}` | {len(values)} | {sum(values):.0f} |")
        print(f"| all | {len(times)} | {total:.0f} |\n")
        print("| Seconds | Test |\n|---|---|")
        for test, seconds in slowest:
            print(f"| {seconds:.1f} | `{test}` |")
        return
    for folder, values in folders:
        print(f"{sum(values):8.1f} s {len(values):5d} tests  {folder}")
    print(f"{total:8.1f} s {len(times):5d} tests  all\n")
    for test, seconds in slowest:
        print(f"{seconds:8.1f} s  {test}")


if __name__ == "__main__":
    main()
