"""Airflow for the DAG tests: its CLI and tests/dags/airflow_probe.py, run by .venv-airflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = ROOT / "dags"
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"
PROBE = Path(__file__).with_name("airflow_probe.py")
#: The visionops command the tasks run: this test run's own virtualenv.
VISIONOPS = Path(sys.executable).with_name("visionops")
#: One ``airflow dags test`` of the debug recipe takes well under this on 2 cores.
DAG_TEST_TIMEOUT_SEC = 600


@dataclass
class Airflow:
    """Airflow's CLI and the probe, with one environment: home, DAGs folder, Variables."""

    home: Path
    env: dict[str, str]
    tracking_uri: str
    logs: Path
    commands: int = field(default=0)

    def cli(
        self, *args: str, extra_env: Mapping[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``airflow ARGS``."""
        return self._execute([str(AIRFLOW_BIN / "airflow"), *args], extra_env, check)

    def probe(self, what: str, extra_env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """What ``airflow_probe.py WHAT`` prints, run by Airflow's interpreter."""
        result = self._execute([str(AIRFLOW_BIN / "python"), str(PROBE), what], extra_env, True)
        return json.loads(result.stdout.strip().splitlines()[-1])

    def dags_test(
        self,
        dag_id: str,
        conf: Mapping[str, Any],
        extra_env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """One run of ``dag_id`` with ``conf``, its tasks in this process (no scheduler)."""
        return self.cli(
            "dags", "test", dag_id, "--conf", json.dumps(conf), extra_env=extra_env, check=check
        )

    def _execute(
        self, argv: list[str], extra_env: Mapping[str, str] | None, check: bool
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv``; its output also goes to a file under ``logs`` and, when it fails and
        ``check`` is set, into the assertion message."""
        result = subprocess.run(
            argv,
            env={**self.env, **(extra_env or {})},
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=DAG_TEST_TIMEOUT_SEC,
        )
        self.commands += 1
        name = "-".join(Path(a).name for a in argv[1:4])
        log = self.logs / f"{self.commands:02d}-{name}.log"
        log.write_text(f"$ {' '.join(argv)}\n{result.stdout}\n--- stderr ---\n{result.stderr}")
        if check and result.returncode != 0:
            tail = (result.stdout + result.stderr)[-6000:]
            raise AssertionError(
                f"{' '.join(argv[:4])} exited {result.returncode} ({log}):\n{tail}"
            )
        return result


def base_environment() -> dict[str, str]:
    """This process's environment without the developer's Airflow, MLflow and visionops
    settings."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW", "_AIRFLOW", "MLFLOW_", "VISIONOPS_"))
    }
