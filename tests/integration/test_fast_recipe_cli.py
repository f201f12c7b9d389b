"""cifar10-fast end to end through the CLI on an image folder: the cache, the device loader,
airbench's data-initialised whitening, flip+shift TTA in training and in `visionops evaluate`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from visionops import names

CLASSES = tuple(f"class{k}" for k in range(10))


def _write_tree(root: Path, per_class: int) -> None:
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            # Class k is a brighter square at a class-specific place: learnable in two epochs.
            pixels = rng.integers(0, 80, size=(32, 32, 3), dtype=np.uint8)
            row, col = divmod(k, 5)
            pixels[4 + row * 14 : 14 + row * 14, 2 + col * 6 : 8 + col * 6] = 230
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")


def _visionops(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visionops", *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.integration
def test_fast_recipe_on_an_image_folder(
    new_tracking_store: Callable[..., str], tmp_path: Path
) -> None:
    _write_tree(tmp_path / "images", per_class=12)
    cache_dir = tmp_path / "cache"
    env = {
        "MLFLOW_TRACKING_URI": new_tracking_store(tmp_path, "mlflow.db"),
        "VISIONOPS_CACHE_DIR": str(cache_dir),
    }
    trained = _visionops(
        "train", "--recipe", "cifar10-fast", "--dataset", "imagefolder",
        "--data-dir", str(tmp_path / "images"), "--epochs", "2", "--warmup-epochs", "0.5",
        "--batch-size", "16", "--eval-batch-size", "20", "--width-multiplier", "0.25",
        "--precision", "fp32", "--channels-last", "off", "--no-system-metrics", "--json",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout.splitlines()[-1])
    assert result["epochs"] == 2

    # The images were decoded once into one cache folder.
    [folder] = [p for p in cache_dir.iterdir() if not p.name.startswith(".")]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["splits"] == {"train": 120} and meta["classes"] == list(CLASSES)

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = client.get_run(result["run_id"])
    assert run.data.params["model.name"] == "airbench"
    assert run.data.params["data.tta"] == "flip_shift"
    assert run.data.params["data.augmentations"] == "random_crop,alternating_flip"
    history = client.get_metric_history(result["run_id"], names.VAL_ACCURACY)
    assert [m.step for m in history] == [1, 2]

    # The logged model, evaluated with the run's TTA on the same held-out images, scores
    # what training reported.
    evaluated = _visionops(
        "evaluate", "--model-uri", result["model_uri"], "--json", cwd=tmp_path, env=env
    )
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout.splitlines()[-1])
    assert report["num_images"] == 12
    assert report["metrics"]["accuracy"] == pytest.approx(result["metrics"][names.VAL_ACCURACY])
