"""A real Airflow for the DAG tests: .venv-airflow (``make airflow``), its own SQLite metadata
database and MLflow store in a temporary folder, the DAGs of dags/ in local mode."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from dags_fixtures import AIRFLOW_BIN, DAGS_FOLDER, VISIONOPS, Airflow, base_environment


@pytest.fixture(scope="session")
def airflow(
    new_tracking_store: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Airflow:
    """A migrated Airflow home whose DAGs are serialized (``airflow dags test`` needs both)."""
    if not (AIRFLOW_BIN / "airflow").exists():
        pytest.skip(
            "Airflow is not installed: `make airflow` creates .venv-airflow (make test does)"
        )
    base = tmp_path_factory.mktemp("airflow")
    home, work, logs = base / "home", base / "work", base / "logs"
    for folder in (home, work, logs):
        folder.mkdir()
    tracking_uri = new_tracking_store(base, "mlflow.db")
    env = {
        **base_environment(),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_VAR_VISIONOPS_EXECUTABLE": str(VISIONOPS),
        "AIRFLOW_VAR_VISIONOPS_WORK_DIR": str(work),
        "AIRFLOW_VAR_VISIONOPS_TRACKING_URI": tracking_uri,
        # Read by the visionops commands the tasks run (the worker's environment reaches them).
        "VISIONOPS_CACHE_DIR": str(base / "dataset-cache"),
        "VISIONOPS_PROGRESS": "plain",
    }
    instance = Airflow(home=home, env=env, tracking_uri=tracking_uri, logs=logs)
    instance.cli("db", "migrate")
    instance.cli("dags", "reserialize")
    return instance
