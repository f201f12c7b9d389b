"""What the pipelines share: retries with back-off, the failure alert, the aliases, the asset."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import Asset

from visionops_dags.alerts import notify_failure

#: Every task: retried twice, the delay doubling from 5 minutes (at most an hour; a user error is
#: not retried, see visionops_dags.tasks); each task sets its own execution_timeout.
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "visionops",
    "retries": 2,
    "retry_delay": timedelta(minutes=5),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(hours=1),
    "on_failure_callback": notify_failure,
}
#: The first day the schedules count from (no catch-up: a new deployment starts today).
START_DATE = datetime(2026, 1, 1, tzinfo=timezone.utc)
TAGS = ["visionops"]
#: The DAG arguments every pipeline shares: ``DAG(dag_id=..., schedule=..., **DAG_ARGS)``.
#: One run at a time: a second daily training or sweep would only compete for the same cores.
DAG_ARGS: dict[str, Any] = {
    "start_date": START_DATE,
    "catchup": False,
    "max_active_runs": 1,
    "default_args": DEFAULT_ARGS,
    "tags": TAGS,
}

#: The alias a pipeline gives a new version, and the one the promotion gate moves
#: (visionops.names.CANDIDATE_ALIAS, PRODUCTION_ALIAS: the DAG files import nothing of visionops).
CANDIDATE = "candidate"
PRODUCTION = "production"

#: Updated when a pipeline points ``candidate`` at a new version; model_evaluation runs on it.
CANDIDATE_ASSET = Asset(name="visionops_candidate")
