"""`visionops train` against the team stack: params and metrics in PostgreSQL through the
authenticated server, artifacts in the S3 bucket, the model registered and loadable."""

from __future__ import annotations

import json

import mlflow
import pytest
import torch

from visionops import names
from visionops.cli import main
from visionops.config import flatten_config
from visionops.recipes import get_recipe

pytestmark = pytest.mark.integration


def test_train_with_credentials_logs_everything_to_the_team_stack(
    shared_stack, as_user, tmp_path, capsys
) -> None:
    as_user(shared_stack, *shared_stack.admin_auth)
    code = main(
        [
            "train",
            "--recipe",
            "debug",
            "--experiment",
            "team-e2e",
            "--register-as",
            "team-e2e-model",
            "--no-system-metrics",
            "--output-dir",
            str(tmp_path / "outputs"),
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    client = mlflow.MlflowClient()
    run = client.get_run(result["run_id"])

    # Params: the whole resolved config, as for a local store.
    expected = flatten_config(get_recipe("debug"))
    assert run.data.params["model.name"] == expected["model.name"]
    assert run.data.params["tracking.experiment"] == "team-e2e"
    assert client.get_experiment(run.info.experiment_id).name == "team-e2e"
    # Metrics: one epoch point per epoch, the final validation accuracy.
    epochs = result["epochs"]
    history = client.get_metric_history(run.info.run_id, names.VAL_ACCURACY)
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))
    assert run.data.metrics[names.VAL_ACCURACY] == pytest.approx(
        result["metrics"][names.VAL_ACCURACY]
    )

    # Artifacts went through the server into the bucket, under the run's folder.
    objects = shared_stack.s3_client().list_objects_v2(Bucket=shared_stack.bucket)
    keys = [o["Key"] for o in objects.get("Contents", [])]
    run_keys = [k for k in keys if f"/{run.info.run_id}/artifacts/" in k]
    artifact_names = {k.split("/artifacts/", 1)[1] for k in run_keys}
    assert {"config.yaml", "training_curves.png", "val_confusion_matrix.json"} <= artifact_names
    assert all(k.startswith("mlartifacts/") for k in run_keys)
    logged_models = [k for k in keys if k.endswith("MLmodel")]
    assert logged_models, "the model's MLmodel file is not in the bucket"

    # The registered version loads back and classifies like the logged model.
    registered = result["registered_model"]
    assert registered == {"name": "team-e2e-model", "version": 1}
    model = mlflow.pytorch.load_model("models:/team-e2e-model/1")
    images = torch.rand(3, 3, 32, 32)
    logits = model(images)
    assert logits.shape == (3, 10)
