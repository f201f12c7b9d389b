"""The checkout as an MLflow Project (MLproject at the root): ``mlflow run . -e train`` makes a
normal visionops training run nested under the project run MLflow opens, ``-e evaluate`` an
evaluation run nested under its own, and every run lands in the experiment ``mlflow run`` was
given."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from visionops import names

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_the_project_has_the_entry_points_of_the_cli() -> None:
    project = yaml.safe_load((ROOT / "MLproject").read_text())
    assert set(project["entry_points"]) == {"train", "tune", "evaluate", "optimize"}
    for name, entry in project["entry_points"].items():
        assert entry["command"].startswith(f"visionops {name} "), name
    assert (ROOT / project["python_env"]).is_file()


def _mlflow_run(entry_point: str, env: dict[str, str], *args: str) -> None:
    argv = [str(BIN / "mlflow"), "run", str(ROOT), "-e", entry_point, "--env-manager", "local"]
    result = subprocess.run([*argv, *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


@pytest.mark.integration
@pytest.mark.slow
def test_mlflow_run_train_and_evaluate_nest_visionops_runs_in_one_experiment(
    new_tracking_store: Callable[..., str],
    tmp_path: Path,
) -> None:
    tracking_uri = new_tracking_store(tmp_path, "mlflow.db")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VISIONOPS_"))},
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
        "MLFLOW_TRACKING_URI": tracking_uri,
        # The command runs in the checkout: its outputs and cache go to the test's folder.
        "VISIONOPS_OUTPUT_DIR": str(tmp_path / "outputs"),
        "VISIONOPS_CACHE_DIR": str(tmp_path / "cache"),
        "VISIONOPS_EPOCHS": "1",
        "VISIONOPS_PROGRESS": "plain",
    }
    # The two ways docs/pipelines.md gives to name the experiment: the flag and MLflow's variable.
    _mlflow_run("train", env, "-P", "recipe=debug", "--experiment-name", "visionops")
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("visionops").experiment_id
    runs = client.search_runs([experiment])
    (project,) = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "train"]
    (training,) = [r for r in runs if r.info.run_id != project.info.run_id]
    assert project.info.status == "FINISHED"
    assert training.data.tags[names.PARENT_RUN_TAG] == project.info.run_id
    # What `visionops train --recipe debug` records: its config, metrics and model.
    assert training.info.status == "FINISHED"
    assert training.data.params["epochs"] == "1"
    assert names.VAL_ACCURACY in training.data.metrics
    model_uri = training.data.tags[names.MODEL_URI_TAG]
    assert not (ROOT / "outputs" / training.info.run_id).exists()

    _mlflow_run(
        "evaluate", {**env, "MLFLOW_EXPERIMENT_NAME": "visionops"}, "-P", f"model_uri={model_uri}"
    )
    runs = client.search_runs([experiment])
    (evaluate_project,) = [
        r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "evaluate"
    ]
    (evaluation,) = [
        r for r in runs if r.data.tags.get(names.PARENT_RUN_TAG) == evaluate_project.info.run_id
    ]
    assert len(runs) == 4
    assert evaluation.info.status == evaluate_project.info.status == "FINISHED"
    assert evaluation.data.tags[names.EVALUATED_MODEL_URI_TAG] == model_uri
    assert evaluation.data.tags[names.SOURCE_RUN_ID_TAG] == training.info.run_id
    assert names.split_metric("val", "accuracy") in evaluation.data.metrics
    # Nothing in MLflow's Default experiment, where `mlflow run` puts runs when not told.
    assert client.search_runs([client.get_experiment_by_name("Default").experiment_id]) == []
