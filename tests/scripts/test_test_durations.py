"""scripts/test_durations.py: time per folder and the slowest tests, over several reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "scripts" / "test_durations.py"


def _report(path: Path, cases: list[tuple[str, str, float]]) -> Path:
    rows = "".join(
        f'<testcase classname="{module}" name="{name}" time="{seconds}"/>'
        for module, name, seconds in cases
    )
    path.write_text(f'<testsuites><testsuite name="pytest">{rows}</testsuite></testsuites>')
    return path


def test_two_reports_add_up_per_folder_and_rank_the_slowest(tmp_path: Path) -> None:
    main = _report(
        tmp_path / "main.xml",
        [
            ("tests.server.test_auth", "test_a@shared_stack", 3.0),  # xdist's group suffix
            ("tests.server.test_auth", "test_b", 1.5),
            ("tests.test_hermetic", "test_c", 0.5),
        ],
    )
    optimize = _report(tmp_path / "optimize.xml", [("tests.optimize.test_pipeline", "test_d", 7)])
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(main), str(optimize), "--top", "2", "--markdown"],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert lines[2:6] == [
        "| `tests/optimize` | 1 | 7 |",
        "| `tests/server` | 2 | 4 |",
        "| `tests/ (top level)` | 1 | 0 |",
        "| all | 4 | 12 |",
    ]
    assert lines[-2:] == [
        "| 7.0 | `tests/optimize/test_pipeline.py::test_d` |",
        "| 3.0 | `tests/server/test_auth.py::test_a` |",
    ]
