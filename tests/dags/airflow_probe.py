"""Run by Airflow's interpreter (.venv-airflow) for tests/dags: print what Airflow makes of dags/.

    python airflow_probe.py dags   # the DAGs, their schedules and tasks, import errors, modules
    python airflow_probe.py pods   # cluster mode: the rendered pod of every pod task

Each prints one JSON object. Airflow's settings come from the environment (AIRFLOW_HOME,
AIRFLOW__CORE__DAGS_FOLDER, AIRFLOW_VAR_VISIONOPS_*), as the tests set them.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

#: Libraries a DAG file must not import when it is parsed (they live in the visionops virtualenv,
#: or would make every parse slow).
FORBIDDEN_AT_PARSE = ("visionops", "torch", "mlflow", "ray")


def load_dags() -> Any:
    """The DAGs as the DAG processor loads them: the folder is a bundle, on ``sys.path``."""
    from pathlib import Path

    from airflow.dag_processing.dagbag import BundleDagBag

    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    return BundleDagBag(dag_folder=folder, bundle_path=folder)


def describe_dags() -> dict[str, Any]:
    bag = load_dags()
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "schedule": dag.schedule if isinstance(dag.schedule, str) else repr(dag.schedule),
            "timetable": type(dag.timetable).__name__,
            "catchup": dag.catchup,
            "params": sorted(dag.params.keys()),
            "tasks": {
                t.task_id: {
                    "operator": type(t).__name__,
                    "downstream": sorted(t.downstream_task_ids),
                    "retries": t.retries,
                    "retry_exponential_backoff": t.retry_exponential_backoff,
                    "execution_timeout_s": (
                        t.execution_timeout.total_seconds() if t.execution_timeout else None
                    ),
                    "on_failure_callback": [getattr(c, "__name__", repr(c)) for c in _callbacks(t)],
                    "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule),
                }
                for t in dag.tasks
            },
        }
    loaded = sorted(name for name in sys.modules if name.split(".")[0] in FORBIDDEN_AT_PARSE)
    return {
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "dags": dags,
        "forbidden_modules_loaded": loaded,
    }


def _callbacks(task: Any) -> list[Any]:
    callback = task.on_failure_callback
    if callback is None:
        return []
    return list(callback) if isinstance(callback, list | tuple) else [callback]


class FakeTaskInstance:
    """What the templates ask of ``ti``: the JSON results of earlier tasks."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results

    def xcom_pull(self, task_ids: str, **_: Any) -> Any:
        return self.results[task_ids]


#: What the earlier tasks of a run would have returned.
RESULTS = {
    "train": {"run_id": "r1", "registered_model": {"name": "vision-classifier", "version": 7}},
    "resolve_versions": {
        "model": "vision-classifier",
        "aliases": {"candidate": "7", "production": "5"},
    },
}


def describe_pods() -> dict[str, Any]:
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.sdk.execution_time.context import VariableAccessor
    from kubernetes.client import ApiClient

    bag = load_dags()
    api = ApiClient()
    pods: dict[str, Any] = {}
    for dag_id, dag in bag.dags.items():
        for task in dag.tasks:
            if not isinstance(task, KubernetesPodOperator):
                continue
            context = {
                "params": {name: dag.params[name] for name in dag.params},
                "var": {"value": VariableAccessor(deserialize_json=False)},
                "ti": FakeTaskInstance(RESULTS),
            }
            task.render_template_fields(context)
            pod = task.build_pod_request_obj(dry_run=True)
            pods[f"{dag_id}.{task.task_id}"] = api.sanitize_for_serialization(pod)
    return {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "pods": pods}


if __name__ == "__main__":
    what = sys.argv[1]
    result = describe_dags() if what == "dags" else describe_pods()
    print(json.dumps(result, default=str))
