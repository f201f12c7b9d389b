"""The `visionops` command line, run as users run it: a separate process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from visionops import names
from visionops.cli import main


def _visionops(*argv: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visionops", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "VISIONOPS_PROGRESS": "plain", **env},
        timeout=300,
    )


@pytest.mark.integration
def test_models_lists_the_registry_as_json() -> None:
    done = _visionops("models", "--json")
    assert done.returncode == 0
    names = [m["name"] for m in json.loads(done.stdout)["models"]]
    assert names == ["airbench", "mobilenet_v3_large", "mobilenet_v3_small", "resnet18", "resnet9"]
    # The readable table goes to stderr, its columns as wide as their widest entry.
    assert done.stderr.splitlines()[3].startswith("resnet18            torchvision ResNet-18")


@pytest.mark.integration
def test_datasets_are_listed_with_whether_they_can_be_cached() -> None:
    done = _visionops("datasets", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)["datasets"]
    assert [d["name"] for d in listed] == ["cifar10", "imagefolder", "synthetic"]
    assert {d["name"]: d["cacheable"] for d in listed} == {
        "cifar10": True,
        "imagefolder": True,
        "synthetic": False,
    }
    assert all(d["description"] for d in listed)


@pytest.mark.integration
def test_recipes_and_augmentations_are_listed() -> None:
    recipes = json.loads(_visionops("recipes", "--json").stdout)["recipes"]
    assert {"default", "quickstart", "debug", "cifar10-fast"} <= {r["name"] for r in recipes}
    listed = json.loads(_visionops("augmentations", "--json").stdout)
    by_name = {a["name"]: a for a in listed["augmentations"]}
    assert list(by_name) == sorted(by_name)
    assert by_name["random_crop"]["loaders"] == ["device", "classic"]
    assert by_name["alternating_flip"]["loaders"] == ["device"]
    assert by_name["autoaugment"]["loaders"] == ["classic"]
    assert by_name["cutmix"]["stage"] == "batch"


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--epochs", "0"], {}, "epochs=0 (from --epochs): Input should be greater than 0"),
        (
            ["--model", "vgg"],
            {},
            "model='vgg': unknown model 'vgg'; known: airbench, mobilenet_v3_large, "
            "mobilenet_v3_small, resnet18, resnet9",
        ),
        (
            ["--dataset", "mnist"],
            {},
            "dataset='mnist': unknown dataset 'mnist'; known: cifar10, imagefolder, synthetic",
        ),
        ([], {"VISIONOPS_LR": "-1"}, "lr=-1 (from VISIONOPS_LR)"),
        (
            ["--dataset", "imagefolder", "--data-dir", "no/such/dir"],
            {},
            "image folder no/such/dir does not exist",
        ),
        (
            ["--dataset", "cifar10", "--data-dir", "empty", "--no-download"],
            {},
            "--dataset imagefolder",
        ),
        (
            ["--recipe", "debug", "--batch-size", "1000"],
            {},
            "batch_size=1000: batch_size x accumulation_steps",
        ),
        (["--resume", "nothing-here"], {}, "--resume 'nothing-here' is neither"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(
    tmp_path: Path,
    argv: list[str],
    env: dict[str, str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["train", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: ") and expected in lines[-1]
    # Bad input fails before any work: no run was created.
    if (tmp_path / "m.db").exists():
        assert MlflowClient(f"sqlite:///{tmp_path / 'm.db'}").search_runs(["0"]) == []
    assert not (tmp_path / "outputs").exists()


@pytest.mark.integration
def test_a_user_error_exits_2_without_a_traceback(tmp_path: Path) -> None:
    done = _visionops("train", "--model", "vgg", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: invalid configuration: model='vgg': unknown model 'vgg'; "
        "known: airbench, mobilenet_v3_large, mobilenet_v3_small, resnet18, resnet9"
    ]


@pytest.mark.integration
def test_train_then_evaluate_as_json(
    new_tracking_store: Callable[..., str], tmp_path: Path
) -> None:
    env = {
        "MLFLOW_TRACKING_URI": new_tracking_store(tmp_path, "mlflow.db"),
        "MLFLOW_EXPERIMENT_NAME": "from-env",
    }
    trained = _visionops(
        "train", "--recipe", "debug", "--register-as", "cli-model", "--json", cwd=tmp_path, **env
    )
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout)
    assert result["registered_model"] == {"name": "cli-model", "version": 1}
    assert result["model_uri"].startswith("models:/")
    assert "mlflow ui --backend-store-uri sqlite:///" in trained.stderr
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = client.get_run(result["run_id"])
    assert (
        client.get_experiment(run.info.experiment_id).name == "from-env"
    )  # MLflow's variable honoured
    assert (tmp_path / result["run_dir"] / "config.yaml").is_file()

    evaluated = _visionops(
        "evaluate", "--model-uri", "models:/cli-model/1", "--json", cwd=tmp_path, **env
    )
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    # Same model, same validation split as the training run: the same accuracy.
    assert report["metrics"]["accuracy"] == pytest.approx(result["metrics"][names.VAL_ACCURACY])
    assert report["num_images"] == 40 and len(report["confusion_matrix"]) == 10
    assert report["source_run_id"] == result["run_id"]
    eval_run = client.get_run(report["run_id"])
    assert eval_run.data.metrics[names.VAL_ACCURACY] == pytest.approx(report["metrics"]["accuracy"])
    assert eval_run.data.tags["visionops.evaluated_model_uri"] == "models:/cli-model/1"
    artifacts = {a.path for a in client.list_artifacts(report["run_id"])}
    assert "val_confusion_matrix.png" in artifacts

    missing = _visionops("evaluate", "--model-uri", "models:/cli-model/7", cwd=tmp_path, **env)
    assert missing.returncode == 2 and "cannot load model 'models:/cli-model/7'" in missing.stderr
    folder = tmp_path / "three-classes"
    for name in ("a", "b", "c"):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (32, 32), (60 * i, 0, 0)).save(folder / name / f"{i}.png")
    other_classes = _visionops(
        "evaluate", "--model-uri", "models:/cli-model/1", "--dataset", "imagefolder",
        "--data-dir", str(folder), cwd=tmp_path, **env,
    )  # fmt: skip
    assert other_classes.returncode == 2
    assert "predicts 10 classes but dataset 'imagefolder' has 3" in other_classes.stderr
    no_test = _visionops(
        "evaluate", "--model-uri", "models:/cli-model/1", "--split", "test", cwd=tmp_path, **env
    )
    assert no_test.returncode == 2 and "no 'test' split" in no_test.stderr
