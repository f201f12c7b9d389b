"""``make test``'s pytest-xdist grouping holds: a group's tests run on one worker.

pytest 9.2 changed how a test's id is stored, and pytest-xdist's ``--dist loadgroup`` (which
reads the group from it) then spread every group over all workers without a word
(pytest-dev/pytest-xdist#1386): each worker built the team stack, Airflow and the trained
registries again. This runs a generated module of grouped tests the way ``make test`` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

_MODULE = """
import os

import pytest

pytestmark = pytest.mark.xdist_group("shared")


@pytest.mark.parametrize("case", range(8))
def test_grouped(case):
    with open(os.environ["WORKERS_LOG"], "a") as log:
        log.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")


@pytest.mark.parametrize("case", range(8))
def test_free(case):
    pass
"""


def test_the_tests_of_one_group_run_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_generated.py").write_text(_MODULE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # none of the project's options
    log = tmp_path / "workers.log"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup"),
            *("-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"), str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "WORKERS_LOG": str(log)},
    )
    assert done.returncode == 0, done.stdout[-2000:]
    workers = log.read_text().split()
    assert len(workers) == 8 and len(set(workers)) == 1, workers
