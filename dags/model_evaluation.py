"""model_evaluation: evaluate ``candidate`` and ``production``, then run the promotion gate.

    resolve_versions  ->  evaluate_candidate  ------------------------>  promote
                      ->  has_production  ->  evaluate_production  ->

``resolve_versions`` (``visionops alias show``) pins the versions the two aliases point to
now; both are evaluated on the same split of the same data (the ``dataset``/``data_dir`` params
override their training runs'); ``promote`` is ``visionops promote --alias production``: the
gate compares their validation accuracy and measures the candidate's latency, records the
decision and its reasons as ``visionops.promotion.production.*`` tags on the candidate
version, and moves the alias only if the candidate passes. A rejection is a result, not a
failure: the task succeeds with the decision in its XCom. Without a production version yet,
``evaluate_production`` is skipped and the gate compares with nothing.

It runs whenever daily_training or hyperparameter_tuning sets a new candidate, or by hand:

    airflow dags trigger model_evaluation -c '{"model_name": "vision-classifier"}'
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task
from visionops_dags.defaults import CANDIDATE, CANDIDATE_ASSET, DAG_ARGS, PRODUCTION
from visionops_dags.tasks import Resources, param, visionops_task, xcom

#: ``visionops promote`` exits 1 for a rejection it has recorded.
EXIT_REJECTED = 1

with DAG(
    dag_id="model_evaluation",
    description="Evaluate candidate and production, promote the candidate if it passes the gate.",
    schedule=[CANDIDATE_ASSET],
    **DAG_ARGS,
    doc_md=__doc__,
    params={
        "model_name": Param("vision-classifier", type="string", minLength=1),
        "split": Param("val", enum=["val", "test"]),
        "dataset": Param("", type="string", description="empty: each training run's"),
        "data_dir": Param("", type="string", description="empty: each training run's"),
        "max_accuracy_drop": Param(0.0, type="number", minimum=0),
        "latency_budget_ms": Param(50.0, type="number", exclusiveMinimum=0),
        "latency_runs": Param(50, type="integer", minimum=1),
    },
) as dag:
    resolve_versions = visionops_task(
        "resolve_versions",
        ["alias", "show", "--model", param("model_name"), "--require", CANDIDATE, "--json"],
        resources=Resources(cpu="500m", memory="1Gi"),
        execution_timeout=timedelta(minutes=10),
    )

    def evaluation(task_id: str, alias: str) -> Any:
        return visionops_task(
            task_id,
            [
                "evaluate",
                "--model-uri",
                f"models:/{param('model_name')}/{xcom('resolve_versions', 'aliases', alias)}",
                "--split",
                param("split"),
                "--dataset",
                param("dataset"),
                "--data-dir",
                param("data_dir"),
                "--json",
            ],
            resources=Resources(cpu="2", memory="4Gi"),
            execution_timeout=timedelta(minutes=30),
        )

    evaluate_candidate = evaluation("evaluate_candidate", CANDIDATE)
    evaluate_production = evaluation("evaluate_production", PRODUCTION)

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def has_production(versions: dict[str, Any]) -> bool:
        """Skip evaluate_production when no version holds production yet."""
        return PRODUCTION in versions["aliases"]

    promote = visionops_task(
        "promote",
        [
            "promote",
            "--model",
            param("model_name"),
            "--alias",
            PRODUCTION,
            "--version",
            xcom("resolve_versions", "aliases", CANDIDATE),
            "--max-accuracy-drop",
            param("max_accuracy_drop"),
            "--latency-budget-ms",
            param("latency_budget_ms"),
            "--latency-runs",
            param("latency_runs"),
            "--json",
        ],
        accept_exit_codes=(EXIT_REJECTED,),
        # Runs after a skipped evaluate_production, not after a failed one.
        trigger_rule="none_failed",
        # The gate times the candidate on one CPU thread, as the serving worker runs it.
        resources=Resources(cpu="1", memory="2Gi"),
        execution_timeout=timedelta(minutes=30),
    )

    resolve_versions >> evaluate_candidate >> promote
    has_production(resolve_versions.output) >> evaluate_production >> promote
