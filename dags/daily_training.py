"""daily_training: train a recipe, evaluate the new version, make it the ``candidate``.

    train  ->  evaluate  ->  set_candidate

``train`` is ``visionops train --register-as MODEL --json`` (a normal visionops run, registered
as a new version of MODEL), ``evaluate`` evaluates that version on the validation split (its
own MLflow run), and ``set_candidate`` (``visionops alias set``) points the alias
``candidate`` at it, which schedules model_evaluation. Trigger with other params to train
something else:

    airflow dags trigger daily_training -c '{"recipe": "cifar10-fast", "dataset": "cifar10"}'
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param
from visionops_dags.defaults import CANDIDATE, CANDIDATE_ASSET, DAG_ARGS
from visionops_dags.tasks import Resources, param, visionops_task, xcom

with DAG(
    dag_id="daily_training",
    description="Train a recipe, evaluate it, register the result with alias candidate.",
    schedule="@daily",
    **DAG_ARGS,
    doc_md=__doc__,
    params={
        "recipe": Param("quickstart", type="string", description="`visionops recipes`"),
        "dataset": Param("", type="string", description="empty: the recipe's"),
        "data_dir": Param("", type="string", description="empty: the recipe's"),
        "epochs": Param(None, type=["null", "integer"], minimum=1, description="null: recipe's"),
        "model_name": Param("vision-classifier", type="string", minLength=1),
        "split": Param("val", enum=["val", "test"], description="what `evaluate` measures"),
    },
) as dag:
    train = visionops_task(
        "train",
        [
            "train",
            "--recipe",
            param("recipe"),
            "--dataset",
            param("dataset"),
            "--data-dir",
            param("data_dir"),
            "--epochs",
            param("epochs"),
            "--register-as",
            param("model_name"),
            "--json",
        ],
        resources=Resources(cpu="4", memory="8Gi"),
        execution_timeout=timedelta(hours=4),
    )
    version = xcom("train", "registered_model", "version")
    evaluate = visionops_task(
        "evaluate",
        [
            "evaluate",
            "--model-uri",
            f"models:/{param('model_name')}/{version}",
            "--split",
            param("split"),
            "--json",
        ],
        resources=Resources(cpu="2", memory="4Gi"),
        execution_timeout=timedelta(minutes=30),
    )
    set_candidate = visionops_task(
        "set_candidate",
        [
            "alias",
            "set",
            "--model",
            param("model_name"),
            "--alias",
            CANDIDATE,
            "--version",
            version,
            "--json",
        ],
        resources=Resources(cpu="500m", memory="1Gi"),
        execution_timeout=timedelta(minutes=10),
        outlets=[CANDIDATE_ASSET],
    )
    train >> evaluate >> set_candidate
