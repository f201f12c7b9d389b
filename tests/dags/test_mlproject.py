"""The checkout as an MLflow Project (MLproject at the root): ``mlflow run . -e train`` makes a
normal visionops training run, nested under the project run MLflow opens."""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.mark.integration
@pytest.mark.slow
def test_mlflow_run_train_makes_a_visionops_run(tmp_path: Path) -> None:
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
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
    argv = [str(BIN / "mlflow"), "run", str(ROOT), "-e", "train", "-P", "recipe=debug"]
    argv += ["--env-manager", "local", "--experiment-name", "mlproject"]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("mlproject")
    runs = client.search_runs([experiment.experiment_id])
    (project,) = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "train"]
    (training,) = [r for r in runs if r.info.run_id != project.info.run_id]
    assert project.info.status == "FINISHED"
    assert training.data.tags[names.PARENT_RUN_TAG] == project.info.run_id
    # What `visionops train --recipe debug` records: its config, metrics and model.
    assert training.info.status == "FINISHED"
    assert training.data.params["epochs"] == "1"
    assert names.VAL_ACCURACY in training.data.metrics
    assert training.data.tags[names.MODEL_URI_TAG]
    assert not (ROOT / "outputs" / training.info.run_id).exists()
