"""scripts/gpu-check.sh and its JSON helper, as far as a machine without a GPU can run them.

The real runs hide any GPU (``CUDA_VISIBLE_DEVICES=""``), so that on the GPU runner too they
show the path without CUDA instead of starting the benchmarks. The helper's checks of a result
(a timed-out step, the sweep's overlap) are run on records and MLflow runs made here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from visionops import names

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu-check.sh"
HELPER = REPO / "scripts" / "lib" / "gpu_check.py"
STEPS = [
    "machine",
    "dataset",
    "cuda-tests",
    "tta-eager",
    "tta-compile",
    "data-pipeline",
    "ddp-scaling",
    "tune",
    "recipe-resnet18",
    "recipe-mobilenetv3",
]
CUDA_STEPS = STEPS[2:]


def gpu_check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    return subprocess.run(
        [str(SCRIPT), *args],
        env={**clean, "VISIONOPS_PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def datasets(tmp_path: Path) -> Path:
    """A stand-in for the shared datasets folder: the CIFAR-10 tarball, 3 classes x 2 images."""
    tree = tmp_path / "tree" / "train"
    for label in ("cat", "dog", "ship"):
        (tree / label).mkdir(parents=True)
        for index in range(2):
            Image.new("RGB", (32, 32), (index * 90, 40, 200)).save(tree / label / f"{index}.jpg")
    folder = tmp_path / "datasets"
    folder.mkdir()
    with tarfile.open(folder / "cifar10-train-jpeg.tar.gz", "w:gz") as archive:
        archive.add(tree, arcname="train")
    return folder


def summary(outdir: Path) -> dict[str, dict]:
    return {
        step["step"]: step for step in json.loads((outdir / "summary.json").read_text())["steps"]
    }


def test_dry_run_lists_every_step_with_its_commands_and_runs_none(tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    result = gpu_check("--dry-run", str(outdir), GPU_CHECK_GPUS="4")
    assert result.returncode == 0, result.stderr
    headers = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("== ")]
    assert headers == STEPS
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]

    def command(*words: str) -> str:
        found = [c for c in commands if all(word in c.split() for word in words)]
        assert len(found) == 1, f"one command with {words} expected in {commands}"
        return found[0]

    command("benchmarks/time_to_accuracy.py", "cifar10-fast", "--compile", "off")
    command("benchmarks/time_to_accuracy.py", "cifar10-fast", "--compile", "on")
    assert "--data-dir" in command("benchmarks/data_pipeline.py", "imagefolder").split()
    assert command("benchmarks/ddp_scaling.py").endswith("--procs 1 2 4")
    tune = command("tune", "--gpus-per-trial", "0.5", "--num-samples", "2")
    assert "--json" in tune.split()
    command("overlap")
    for recipe in ("cifar10-resnet18", "cifar10-mobilenetv3"):
        assert "--device cuda" in command("train", "--recipe", recipe)
    pytest_run = command("-m", "pytest")
    assert "tests/training/test_runtime.py" in pytest_run.split()
    assert not outdir.exists()


def test_ddp_runs_on_every_gpu_present(tmp_path: Path) -> None:
    result = gpu_check("--dry-run", str(tmp_path / "out"), GPU_CHECK_GPUS="3")
    assert "benchmarks/ddp_scaling.py --procs 1 2 3" in result.stdout


def test_without_cuda_the_cuda_steps_are_skipped_and_the_summary_is_written(
    tmp_path: Path, datasets: Path
) -> None:
    outdir, data_dir = tmp_path / "out", tmp_path / "data"
    result = gpu_check(
        str(outdir), GPU_CHECK_DATASETS=str(datasets), GPU_CHECK_DATA_DIR=str(data_dir)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the steps that need CUDA are skipped" in result.stderr
    steps = summary(outdir)
    assert list(steps) == STEPS
    assert steps["machine"]["status"] == steps["dataset"]["status"] == "ok"
    for name in CUDA_STEPS:
        assert steps[name]["status"] == "skipped"
        assert steps[name]["reason"].startswith("no CUDA GPU"), steps[name]
        assert json.loads((outdir / f"{name}.json").read_text())["status"] == "skipped"
    machine = json.loads((outdir / "machine.json").read_text())["result"]
    assert machine["cuda_available"] is False and machine["gpus"] == []
    assert json.loads((outdir / "summary.json").read_text())["machine"] == machine
    dataset = json.loads((outdir / "dataset.json").read_text())
    assert dataset["result"] == {"data_dir": str(data_dir), "classes": 3, "images": 6}
    assert any(c.startswith("tar -xzf") for c in dataset["commands"])
    assert sorted(p.name for p in (data_dir / "train").iterdir()) == ["cat", "dog", "ship"]


def test_only_runs_the_chosen_steps_and_the_dataset_they_need(
    tmp_path: Path, datasets: Path
) -> None:
    env = {"GPU_CHECK_DATASETS": str(datasets), "GPU_CHECK_DATA_DIR": str(tmp_path / "data")}
    assert gpu_check("--only", "recipe-resnet18", str(tmp_path / "a"), **env).returncode == 0
    assert list(summary(tmp_path / "a")) == ["machine", "dataset", "recipe-resnet18"]
    assert gpu_check("--only=tune,ddp-scaling", str(tmp_path / "b"), **env).returncode == 0
    assert list(summary(tmp_path / "b")) == ["machine", "ddp-scaling", "tune"]

    unknown = gpu_check("--only", "tune,warp-drive", str(tmp_path / "c"))
    assert unknown.returncode == 2
    assert "unknown step 'warp-drive'" in unknown.stderr and "recipe-mobilenetv3" in unknown.stderr


def test_a_missing_dataset_fails_its_step_and_the_script(tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    result = gpu_check(
        "--only",
        "tta-eager",
        str(outdir),
        GPU_CHECK_DATASETS=str(tmp_path / "nowhere"),
        GPU_CHECK_DATA_DIR=str(tmp_path / "data"),
    )
    assert result.returncode == 1
    assert "failed: dataset" in result.stderr
    dataset = summary(outdir)["dataset"]
    assert dataset["status"] == "failed"
    assert "no CIFAR-10 copy" in dataset["reason"] and "GPU_CHECK_DATASETS" in dataset["reason"]
    assert "no CIFAR-10 copy" in (outdir / "dataset.log").read_text()


def test_steps_past_the_budget_are_skipped(tmp_path: Path, datasets: Path) -> None:
    outdir = tmp_path / "out"
    env = {"GPU_CHECK_DATASETS": str(datasets), "GPU_CHECK_DATA_DIR": str(tmp_path / "data")}
    result = gpu_check("--only", "dataset", str(outdir), GPU_CHECK_BUDGET_S="10", **env)
    assert result.returncode == 0, result.stderr
    steps = summary(outdir)
    assert list(steps) == ["machine", "dataset"]
    for step in steps.values():
        assert step["status"] == "skipped"
        assert re.fullmatch(r"out of time: \d+ s of the 10 s budget left", step["reason"])
    assert not (tmp_path / "data").exists()


def test_wheels_folder_is_ignored_by_git() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", ".whl/mlflow_skinny-3.17.2-py3-none-any.whl"], cwd=REPO
    )
    assert ignored.returncode == 0


# --- the helper ----------------------------------------------------------------------------


def helper(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HELPER), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


@pytest.mark.parametrize(
    ("rc", "log", "status", "reason"),
    [
        (0, '+ python bench.py\nepoch 1\n{"accuracy": 0.9}\nsaved\n', "ok", None),
        (124, "+ python bench.py\nepoch 1\n", "failed", "timed out after 5 s"),
        (
            1,
            '{"partial": true}\nerror: CUDA out of memory\n',
            "failed",
            "exit status 1: error: CUDA out of memory",
        ),
        (0, "+ python bench.py\nall fine\n", "failed", "the step printed no JSON result"),
    ],
)
def test_a_step_record_says_how_it_ended(
    tmp_path: Path, rc: int, log: str, status: str, reason: str | None
) -> None:
    (tmp_path / "s.log").write_text(log)
    args = ["--outdir", str(tmp_path), "--step", "s", "--rc", str(rc), "--seconds", "1.34"]
    result = helper("record", *args, "--timeout", "5", "--log", str(tmp_path / "s.log"))
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "s.json").read_text())
    assert (record["status"], record["reason"]) == (status, reason)
    assert record["seconds"] == 1.3
    assert record["commands"] == (["python bench.py"] if log.startswith("+") else [])
    if status == "ok":
        assert record["result"] == {"accuracy": 0.9}


def test_junit_outcomes(tmp_path: Path) -> None:
    (tmp_path / "r.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.a" name="test_one"/>'
        '<testcase classname="tests.a" name="test_gpu"><skipped message="needs a CUDA GPU"/>'
        '</testcase><testcase classname="tests.b" name="test_two"><failure message="boom"/>'
        "</testcase></testsuite></testsuites>"
    )
    outcome = json.loads(helper("junit", str(tmp_path / "r.xml")).stdout)
    assert (outcome["passed"], outcome["failed"], outcome["skipped"]) == (1, 1, 1)
    assert outcome["tests"][1] == {
        "test": "tests.a::test_gpu",
        "outcome": "skipped",
        "message": "needs a CUDA GPU",
    }


@pytest.mark.parametrize(
    ("second_start", "device", "rc", "message"),
    [
        (5, "cuda:0 (NVIDIA H200), bf16", 0, None),
        (20, "cuda:0 (NVIDIA H200), bf16", 1, "did not run at the same time"),
        (5, "cpu (cpu), fp32", 1, "trained on 'cpu (cpu), fp32', not cuda"),
    ],
)
def test_overlap_of_the_sweeps_trials(
    tmp_path: Path, tracking_uri: str, second_start: int, device: str, rc: int, message: str | None
) -> None:
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("sweep")
    base = int(time.time() * 1000)
    trials = []
    for index, (start, end) in enumerate([(0, 10), (second_start, second_start + 10)]):
        run = client.create_run(
            experiment, start_time=base + start * 1000, tags={names.DEVICE_TAG: device}
        )
        client.set_terminated(run.info.run_id, end_time=base + end * 1000)
        trials.append(
            {"trial_id": f"t{index}", "run_id": run.info.run_id, "status": "completed", "epochs": 3}
        )
    sweep = {"best_metric": 0.5, "parent_run_id": "p", "trials": trials}
    (tmp_path / "tune.out").write_text("sweep run: p\n" + json.dumps(sweep) + "\n")

    result = helper("overlap", str(tmp_path / "tune.out"), tracking_uri)
    assert result.returncode == rc, result.stderr
    report = json.loads(result.stdout)
    assert report["concurrent"] is (second_start < 10)
    assert report["overlap_seconds"] == max(10 - second_start, 0)
    assert [t["device"] for t in report["trials"]] == [device, device]
    if message:
        assert message in result.stderr
