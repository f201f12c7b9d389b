"""hyperparameter_tuning: a weekly ``visionops tune`` sweep; its best trial is the ``candidate``.

    tune

``visionops tune`` runs the sweep on Ray Tune (one MLflow parent run, a nested run per trial),
registers the best completed trial as a new version of MODEL and points ``candidate`` at it,
which schedules model_evaluation. When the best trial does not beat chance by
``chance_margin`` (null: the preset's, 0.1) nothing is registered and the task ends skipped,
the reason in its log, so model_evaluation does not run. The preset sets the recipe and the
sweep size; the other params override it (null or empty: the preset's). ``ray_address``
joins an existing Ray cluster instead of starting Ray inside the task (docs/tuning.md,
"Cluster mode").

    airflow dags trigger hyperparameter_tuning -c '{"preset": "quick"}'
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param
from visionops_dags.defaults import CANDIDATE_ASSET, DAG_ARGS
from visionops_dags.tasks import Resources, param, visionops_task

with DAG(
    dag_id="hyperparameter_tuning",
    description="A visionops tune sweep; the best trial is registered with alias candidate.",
    schedule="@weekly",
    **DAG_ARGS,
    doc_md=__doc__,
    params={
        "preset": Param("default", enum=["quick", "default", "extensive"]),
        "recipe": Param("", type="string", description="empty: the preset's"),
        "dataset": Param("", type="string", description="empty: the recipe's"),
        "data_dir": Param("", type="string", description="empty: the recipe's"),
        "num_samples": Param(None, type=["null", "integer"], minimum=1),
        "max_epochs": Param(None, type=["null", "integer"], minimum=1),
        "search": Param("", enum=["", "optuna", "hyperopt", "random"]),
        "scheduler": Param("", enum=["", "asha", "hyperband", "fifo"]),
        "max_concurrent_trials": Param(None, type=["null", "integer"], minimum=1),
        "chance_margin": Param(None, type=["null", "number"], minimum=0, exclusiveMaximum=1),
        "ray_address": Param("", type="string", description="empty: a Ray inside the task"),
        "model_name": Param("vision-classifier", type="string", minLength=1),
    },
) as dag:
    tune = visionops_task(
        "tune",
        [
            "tune",
            "--preset",
            param("preset"),
            "--recipe",
            param("recipe"),
            "--dataset",
            param("dataset"),
            "--data-dir",
            param("data_dir"),
            "--num-samples",
            param("num_samples"),
            "--max-epochs",
            param("max_epochs"),
            "--search",
            param("search"),
            "--scheduler",
            param("scheduler"),
            "--max-concurrent-trials",
            param("max_concurrent_trials"),
            "--chance-margin",
            param("chance_margin"),
            "--address",
            param("ray_address"),
            "--register-as",
            param("model_name"),
            "--json",
        ],
        resources=Resources(cpu="8", memory="16Gi"),
        # A retry starts the sweep again: one is enough for a lost worker.
        retries=1,
        execution_timeout=timedelta(hours=12),
        outlets=[CANDIDATE_ASSET],
        skip_when="not_registered",  # the sweep's line saying why it registered nothing
    )
