"""The suite's results do not depend on the caller's environment.

A shell set up for a remote registry, an S3 endpoint or a Ray cluster must not reach the tests,
not even their session- and module-scoped fixtures, which are built before any per-test
fixture could clear it (tests/conftest.py clears it once, at the start of the session).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Nothing listens on port 9 (discard) of the loopback: anything sent there fails at once.
UNREACHABLE = "http://127.0.0.1:9"
CALLERS_SETTINGS = {
    "MLFLOW_TRACKING_URI": UNREACHABLE,
    "MLFLOW_REGISTRY_URI": UNREACHABLE,
    "MLFLOW_EXPERIMENT_NAME": "callers-experiment",
    "VISIONOPS_EXPERIMENT": "callers-experiment",
    "AWS_ENDPOINT_URL": UNREACHABLE,
    "AWS_ACCESS_KEY_ID": "callers-key",
    "AWS_SECRET_ACCESS_KEY": "callers-secret",
    "RAY_ADDRESS": "127.0.0.1:9",
}
#: Tests whose module-scoped fixtures train and register a model, and read a store.
NODE_IDS = (
    "tests/registry/test_promotion.py::test_first_promotion_has_no_incumbent_and_records_its_evidence",
    "tests/tuning/test_analysis.py::test_the_parent_run_gets_importances_and_both_figures",
)


@pytest.mark.integration
def test_the_callers_mlflow_aws_and_ray_settings_do_not_reach_the_tests(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *NODE_IDS,
            "-q",
            "-p",
            "no:cacheprovider",
            "--basetemp",
            str(tmp_path / "inner"),
        ],
        cwd=ROOT,
        env={**os.environ, **CALLERS_SETTINGS},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"{len(NODE_IDS)} passed" in result.stdout
