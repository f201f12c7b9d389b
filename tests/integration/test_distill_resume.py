"""Distil a registered teacher into a smaller student; kill the run mid-epoch, resume it, and
compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from visionops.cli import main
from visionops.config import TrainConfig, with_fields
from visionops.errors import ConfigError
from visionops.models import ImageClassifier, create_model
from visionops.tracking.model_logging import log_model
from visionops.training import checkpoint as ckpt
from visionops.training.job import build_job
from visionops.training.runtime import resolve_runtime

pytestmark = pytest.mark.integration

_TEACHER = "tiny-teacher"
_IMAGE_SIZE = 16  # a quarter of the debug recipe's pixels: the teacher's forward is not free


@dataclass(frozen=True)
class Teacher:
    tracking_uri: str
    model_uri: str  # a pinned version: models:/tiny-teacher/1
    root: Path


@pytest.fixture(scope="module")
def teacher(
    new_tracking_store: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Teacher:
    """Twice the student's width, trained for an epoch and registered."""
    from visionops.recipes import get_recipe
    from visionops.training import train

    root = tmp_path_factory.mktemp("distill")
    uri = new_tracking_store(root, "mlflow.db")
    cfg = with_fields(
        get_recipe("debug"),
        epochs=1,
        image_size=_IMAGE_SIZE,
        width_multiplier=0.25,
        tracking_uri=uri,
        experiment="teachers",
        output_dir=str(root / "teacher-runs"),
        cache_dir=str(root / "cache"),
        register_as=_TEACHER,
    )
    assert train(cfg).registered_version == 1
    return Teacher(uri, f"models:/{_TEACHER}/1", root)


def _train_args(teacher: Teacher, output_dir: Path, *extra: str) -> list[str]:
    """The debug recipe's student (width 0.125): 11 steps per epoch, checkpoints every 4."""
    return [
        "train", "--recipe", "debug", "--deterministic", "--image-size", str(_IMAGE_SIZE),
        "--teacher", teacher.model_uri, "--distill-temperature", "3", "--distill-alpha", "0.8",
        "--log-every-n-steps", "1", "--checkpoint-every-n-steps", "4", "--no-log-model",
        "--tracking-uri", teacher.tracking_uri, "--output-dir", str(output_dir),
        "--experiment", "distill", "--json", *extra,
    ]  # fmt: skip


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "visionops", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "VISIONOPS_PROGRESS": "plain"}


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir)[0])["model"]


def test_distillation_killed_mid_epoch_resumes_bit_exact(
    teacher: Teacher, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The uninterrupted run, in this process (one interpreter start fewer); the same CLI.
    assert main(_train_args(teacher, tmp_path / "reference")) == 0
    reference = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    crashed_dir = tmp_path / "crashed"
    proc = subprocess.Popen(
        _cli(_train_args(teacher, crashed_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "epoch 2/2 step 6/" in line:  # step 17; the checkpoint of step 16 is written
            proc.send_signal(signal.SIGKILL)
            break
    _, rest = proc.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert proc.returncode == -signal.SIGKILL, stderr
    started = re.search(r"run (\w+) on", stderr)
    assert started is not None, stderr
    run_id = started.group(1)
    assert ckpt.list_checkpoints(crashed_dir / run_id)[0].name == "step-000000016.pt"

    done = subprocess.run(
        _cli([*_train_args(teacher, crashed_dir), "--resume"]),
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    resumed = json.loads(done.stdout.strip().splitlines()[-1])

    assert resumed["run_id"] == run_id
    client = MlflowClient(teacher.tracking_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["distill.teacher"] == teacher.model_uri
    assert run.data.params["distill.distill_alpha"] == "0.8"
    expected = _final_weights(Path(reference["run_dir"]))
    actual = _final_weights(crashed_dir / run_id)
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), f"weights differ in {name}"
    assert resumed["metrics"] == reference["metrics"]


def _student(teacher: Teacher, tmp_path: Path, teacher_uri: str) -> TrainConfig:
    from visionops.recipes import get_recipe

    return with_fields(
        get_recipe("debug"),
        image_size=_IMAGE_SIZE,
        teacher=teacher_uri,
        tracking_uri=teacher.tracking_uri,
        output_dir=str(tmp_path / "outputs"),
    )


def test_the_teacher_is_frozen_and_predicts_in_eval_mode(teacher: Teacher, tmp_path: Path) -> None:
    cfg = _student(teacher, tmp_path, teacher.model_uri)
    job = build_job(cfg, resolve_runtime(cfg))
    assert job.teacher is not None
    assert all(not p.requires_grad for p in job.teacher.parameters())

    buffers = {name: b.clone() for name, b in job.teacher.named_buffers()}
    images = torch.rand(8, 3, _IMAGE_SIZE, _IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        alone = job.teacher(images[:2])
        # Other images, far from the first two's statistics: batch statistics would move.
        in_batch = job.teacher(torch.cat([images[:2], images[2:] * 0.1 + 0.9]))
    torch.testing.assert_close(alone, in_batch[:2])
    for name, buffer in job.teacher.named_buffers():
        assert torch.equal(buffer, buffers[name]), f"the teacher's {name} changed"


def test_a_bad_teacher_uri_is_one_line_and_exit_2(
    teacher: Teacher, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for uri in (f"models:/{_TEACHER}/9", "no-such-model"):
        assert main(["train", "--recipe", "debug", "--teacher", uri,
                     "--tracking-uri", teacher.tracking_uri]) == 2  # fmt: skip
        # MLflow's download progress bar may come first, on the same stream.
        lines = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in lines if line.startswith("error:")]
        assert errors == lines[-1:], lines
        assert errors[0].startswith(f"error: invalid configuration: teacher={uri!r}: cannot load")
        assert "Traceback" not in "".join(lines)


def test_a_teacher_with_other_classes_is_a_config_error(teacher: Teacher, tmp_path: Path) -> None:
    three_classes = ImageClassifier(
        create_model("resnet9", 3, width_multiplier=0.125), (0.5,) * 3, (0.25,) * 3
    )
    client = MlflowClient(teacher.tracking_uri)
    run_id = client.create_run(client.create_experiment("other-classes")).info.run_id
    example = torch.rand(4, 3, _IMAGE_SIZE, _IMAGE_SIZE)
    info = log_model(
        three_classes,
        example,
        None,
        run_id,
        teacher.tracking_uri,
        classes=("a", "b", "c"),
        tta="none",
    )
    client.set_terminated(run_id)

    cfg = _student(teacher, tmp_path, info.model_uri)
    with pytest.raises(ConfigError, match=r"teacher=.*predicts 3 classes, the data has 10"):
        build_job(cfg, resolve_runtime(cfg))


def test_a_teacher_for_other_image_sizes_is_a_config_error(
    teacher: Teacher, tmp_path: Path
) -> None:
    cfg = with_fields(_student(teacher, tmp_path, teacher.model_uri), image_size=32)
    with pytest.raises(ConfigError, match=r"teacher=.*does not take this data's 3x32x32 images"):
        build_job(cfg, resolve_runtime(cfg))
