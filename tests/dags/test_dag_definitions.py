"""The DAGs as Airflow parses them: no import errors, the schedules and tasks the docs promise,
nothing of visionops imported at parse time, and the pod spec of cluster mode (no cluster)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dags_fixtures import Airflow

from visionops import env as visionops_env

pytestmark = pytest.mark.integration

EXPECTED = {
    "daily_training": {
        "schedule": "@daily",
        "edges": {"train": ["evaluate"], "evaluate": ["set_candidate"], "set_candidate": []},
    },
    "hyperparameter_tuning": {"schedule": "@weekly", "edges": {"tune": []}},
    "model_evaluation": {
        "timetable": "AssetTriggeredTimetable",
        "edges": {
            "resolve_versions": ["evaluate_candidate", "has_production"],
            "has_production": ["evaluate_production"],
            "evaluate_candidate": ["promote"],
            "evaluate_production": ["promote"],
            "promote": [],
        },
    },
}
#: The tasks that run a visionops command, each with its retries and timeout.
COMMAND_TASKS = {
    "daily_training": ["train", "evaluate", "set_candidate"],
    "hyperparameter_tuning": ["tune"],
    "model_evaluation": [
        "resolve_versions",
        "evaluate_candidate",
        "evaluate_production",
        "promote",
    ],
}
CLUSTER_ENV = {
    "AIRFLOW_VAR_VISIONOPS_MODE": "cluster",
    "AIRFLOW_VAR_VISIONOPS_IMAGE": "registry.example.com/visionops:1.4",
    "AIRFLOW_VAR_VISIONOPS_NAMESPACE": "ml",
    "AIRFLOW_VAR_VISIONOPS_TRACKING_URI": "https://mlflow.example.com",
    # The hook reads the XCom sidecar's image from this connection (it contacts nothing).
    "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps({"conn_type": "kubernetes"}),
}


def test_every_dag_parses_with_its_schedule_and_tasks(airflow: Airflow) -> None:
    found = airflow.probe("dags")
    assert found["import_errors"] == {}
    assert found["forbidden_modules_loaded"] == [], "a DAG file imported these at parse time"
    assert set(found["dags"]) == set(EXPECTED)
    for dag_id, expected in EXPECTED.items():
        dag = found["dags"][dag_id]
        if "schedule" in expected:
            assert dag["schedule"] == expected["schedule"], dag_id
        else:
            assert dag["timetable"] == expected["timetable"], dag_id
        assert dag["catchup"] is False
        edges = {task_id: task["downstream"] for task_id, task in dag["tasks"].items()}
        assert edges == expected["edges"], dag_id
        for task_id in COMMAND_TASKS[dag_id]:
            task = dag["tasks"][task_id]
            assert task["operator"] == "VisionopsCommand", (dag_id, task_id)
            assert task["retries"] >= 1 and task["retry_exponential_backoff"] > 0
            assert task["execution_timeout_s"], (dag_id, task_id)
            assert task["on_failure_callback"] == ["notify_failure"], (dag_id, task_id)
    assert found["dags"]["model_evaluation"]["tasks"]["promote"]["trigger_rule"] == "none_failed"


@pytest.fixture(scope="module")
def pods(airflow: Airflow) -> dict[str, Any]:
    found = airflow.probe("pods", extra_env=CLUSTER_ENV)
    assert found["import_errors"] == {}
    return found["pods"]


def test_cluster_mode_makes_every_command_task_a_pod(pods: dict[str, Any]) -> None:
    expected = {f"{dag}.{task}" for dag, tasks in COMMAND_TASKS.items() for task in tasks}
    assert set(pods) == expected


def test_the_training_pod_runs_the_visionops_image_with_its_command_and_resources(
    pods: dict[str, Any],
) -> None:
    pod = pods["daily_training.train"]
    assert pod["metadata"]["namespace"] == "ml"
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert "airflow-xcom-sidecar" in containers  # collects the JSON result
    base = containers["base"]
    assert base["image"] == "registry.example.com/visionops:1.4"
    assert base["command"][:2] == ["/bin/sh", "-c"] and base["command"][3] == "visionops"
    # The params left at "the recipe's" are gone; the rest are the defaults of the DAG.
    assert base["args"] == [
        "train",
        "--recipe",
        "quickstart",
        "--register-as",
        "vision-classifier",
        "--json",
    ]
    assert base["resources"] == {
        "requests": {"cpu": "4", "memory": "8Gi"},
        "limits": {"memory": "8Gi"},
    }
    env = {e["name"]: e["value"] for e in base["env"]}
    # The short retry policy of visionops.env, spelled out in the DAGs (no visionops there).
    retries = {var.name: value for var, value in visionops_env.SHORT_RETRY_POLICY}
    assert env == {"MLFLOW_TRACKING_URI": "https://mlflow.example.com", **retries}
    assert base["envFrom"] == [{"secretRef": {"name": "visionops-tracking", "optional": True}}]


def test_later_pods_get_earlier_results_through_xcom(pods: dict[str, Any]) -> None:
    def args(name: str) -> list[str]:
        (base,) = [c for c in pods[name]["spec"]["containers"] if c["name"] == "base"]
        return base["args"]

    assert args("daily_training.evaluate")[:3] == [
        "evaluate",
        "--model-uri",
        "models:/vision-classifier/7",
    ]
    assert args("daily_training.set_candidate") == [
        *("alias", "set", "--model", "vision-classifier"),
        *("--alias", "candidate", "--version", "7", "--json"),
    ]
    assert args("model_evaluation.resolve_versions") == [
        *("alias", "show", "--model", "vision-classifier", "--require", "candidate", "--json"),
    ]
    assert args("model_evaluation.evaluate_candidate")[2] == "models:/vision-classifier/7"
    assert args("model_evaluation.evaluate_production")[2] == "models:/vision-classifier/5"
    promote = args("model_evaluation.promote")
    assert promote[promote.index("--version") + 1] == "7"
    assert promote[promote.index("--alias") + 1] == "production"


FAKE_PROGRAM = """#!/bin/sh
echo "working on $*"
echo "a warning" >&2
printf '%s\\n' "$LAST"
exit "$CODE"
"""


@pytest.mark.parametrize(
    ("last", "code", "expected_status", "xcom"),
    [
        ('{"run_id": "r1"}', 0, 0, {"run_id": "r1"}),
        ('{"decision": "rejected"}', 1, 0, {"decision": "rejected"}),  # promote's rejection
        ("Traceback: boom", 1, 1, None),
        ("done", 0, 1, None),  # success without a result is a failure
        ('{"partial": true}', 3, 3, {"partial": True}),
    ],
)
def test_the_pod_script_hands_the_json_line_to_the_sidecar(
    pods: dict[str, Any],
    tmp_path: Path,
    last: str,
    code: int,
    expected_status: int,
    xcom: dict[str, Any] | None,
) -> None:
    (base,) = [
        c for c in pods["model_evaluation.promote"]["spec"]["containers"] if c["name"] == "base"
    ]
    shell, flag, script, _ = base["command"]
    program = tmp_path / "visionops"
    program.write_text(FAKE_PROGRAM)
    program.chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin",
        "LAST": last,
        "CODE": str(code),
        "XCOM_RETURN_DIR": str(tmp_path / "xcom"),
    }
    result = subprocess.run(
        [shell, flag, script, str(program), "promote", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == expected_status, result.stderr
    assert "working on promote --json" in result.stdout  # the output still reaches the log
    returned = tmp_path / "xcom" / "return.json"
    assert (json.loads(returned.read_text()) if returned.exists() else None) == xcom
