"""``--compile``: how it resolves, and a compiled run on CPU that trains, checkpoints an
uncompiled state, logs an exportable model and resumes compiled or not.

Inductor compiles for tens of seconds on CPU: one compiled run (the debug recipe) is shared by
the tests that inspect it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.cli.config_flags import config_overrides
from visionops.cli.parser import build_parser
from visionops.config import TrainConfig, resolve_config, with_fields
from visionops.errors import ConfigError
from visionops.recipes import get_recipe
from visionops.training import TrainResult, train
from visionops.training import checkpoint as ckpt
from visionops.training.checks import check_names
from visionops.training.evaluate import evaluate
from visionops.training.job import TrainingJob, build_job
from visionops.training.model_source import load_logged_module
from visionops.training.runtime import resolve_runtime


@pytest.mark.parametrize(("setting", "compiled"), [("auto", False), ("on", True), ("off", False)])
def test_compile_resolves_to_on_only_when_asked_on_cpu(setting: str, compiled: bool) -> None:
    assert resolve_runtime(with_fields(TrainConfig(), device="cpu", compile=setting)).compile is (
        compiled
    )


@pytest.fixture
def a_cuda_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """What resolve_runtime reads of a machine with one GPU (nothing runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)


@pytest.mark.usefixtures("a_cuda_machine")
def test_compile_auto_is_on_for_cuda_unless_the_network_cannot_be_compiled() -> None:
    assert resolve_runtime(TrainConfig(compile="auto")).compile
    assert not resolve_runtime(TrainConfig(compile="off")).compile
    # torch.compile fails on a QAT graph: auto trains it eagerly, compile=on is refused.
    qat = TrainConfig(compile="auto", model={"compression": "qat"}, tracking={"log_model": False})
    assert not resolve_runtime(qat).compile
    with pytest.raises(ConfigError, match=r"compile='on': torch.compile cannot compile a qat"):
        check_names(with_fields(qat, compile="on"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compile_auto_is_on_for_the_gpu_here() -> None:
    assert resolve_runtime(TrainConfig(device="auto", compile="auto")).compile


def test_the_train_command_has_a_compile_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert "--compile {auto,on,off}" in capsys.readouterr().out
    args = build_parser().parse_args(["train", "--compile", "off"])
    assert resolve_config(TrainConfig(), config_overrides(args, environ={})).compile == "off"
    with pytest.raises(ConfigError, match=r"compile=fast \(from --compile\)"):
        args = build_parser().parse_args(["train", "--compile", "fast"])
        resolve_config(TrainConfig(), config_overrides(args, environ={}))


@pytest.fixture(scope="module")
def compiled_run(
    new_tracking_store: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainConfig, TrainResult]:
    """The debug recipe trained compiled, with TTA, its model logged; checkpoints after both
    epochs."""
    root = tmp_path_factory.mktemp("compiled")
    cfg = with_fields(
        get_recipe("debug"),
        tracking_uri=new_tracking_store(root, "mlflow.db"),
        output_dir=str(root / "outputs"),
        experiment="tests",
        compile="on",
        tta="flip",
    )
    with pytest.MonkeyPatch.context() as env:  # the conftest's isolation is per test
        env.setenv("VISIONOPS_CACHE_DIR", str(root / "dataset-cache"))
        env.setenv("VISIONOPS_PROGRESS", "plain")
        return cfg, train(cfg)


def _eager_job(cfg: TrainConfig) -> TrainingJob:
    eager = with_fields(cfg, compile="off")
    return build_job(eager, resolve_runtime(eager))


@pytest.mark.slow
def test_a_compiled_run_logs_what_compile_resolved_to(
    compiled_run: tuple[TrainConfig, TrainResult],
) -> None:
    cfg, result = compiled_run
    assert result.epochs_completed == 2
    run = MlflowClient(cfg.tracking.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params[names.EFFECTIVE_COMPILE_PARAM] == "on"
    assert run.data.params["compile"] == "on"
    assert "compile=True" in run.data.tags[names.DEVICE_TAG]


@pytest.mark.slow
def test_its_checkpoint_loads_into_an_uncompiled_model_that_evaluates_the_same(
    compiled_run: tuple[TrainConfig, TrainResult],
) -> None:
    cfg, result = compiled_run
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(result.run_dir)[0])["model"]
    assert not [key for key in state if "_orig_mod" in key]
    job = _eager_job(cfg)
    job.model.load_state_dict(state)  # strict: every key matches the plain module's
    job.model.eval()
    val = evaluate(job.model, job.val_loader, job.runtime, job.data.num_classes, tta="flip")
    # The compiled flip-TTA validation of the last epoch, recomputed eagerly.
    assert val.loss == pytest.approx(result.metrics[names.VAL_LOSS], rel=1e-4)
    # An image whose top two logits tie to rounding may tip either way.
    assert val.accuracy == pytest.approx(
        result.metrics[names.VAL_ACCURACY], abs=1.5 / val.num_images
    )


@pytest.mark.slow
def test_its_logged_model_is_the_exported_uncompiled_network(
    compiled_run: tuple[TrainConfig, TrainResult],
) -> None:
    cfg, result = compiled_run
    assert result.model_uri is not None
    logged = load_logged_module(result.model_uri, cfg.tracking.tracking_uri)
    job = _eager_job(cfg)
    job.model.load_state_dict(
        ckpt.load_checkpoint(ckpt.list_checkpoints(result.run_dir)[0])["model"]
    )
    job.model.eval()
    images = next(iter(job.val_loader))[0][:8]
    with torch.no_grad():
        torch.testing.assert_close(logged(images), job.model(images), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["on", "off"])
def test_a_compiled_run_resumes_compiled_or_not(
    compiled_run: tuple[TrainConfig, TrainResult], setting: str, tmp_path: Path
) -> None:
    cfg, result = compiled_run
    # A copy of the run folder, so that each resume continues the same first epoch.
    run_dir = shutil.copytree(result.run_dir, tmp_path / "run")
    newest, after_first_epoch = ckpt.list_checkpoints(run_dir)[:2]
    finished = ckpt.load_checkpoint(newest)

    resumed = train(
        with_fields(cfg, compile=setting, log_model=False), resume=str(after_first_epoch)
    )

    assert resumed.run_id == result.run_id and resumed.epochs_completed == 2
    again = ckpt.load_checkpoint(ckpt.list_checkpoints(run_dir)[0])
    assert again["progress"]["step"] == finished["progress"]["step"]
    # The second epoch retrained from the same state, data order and augmentation: the same
    # weights up to the rounding in which compiled and eager kernels differ (eagerly, at most
    # 0.4% of a tensor's largest value on this CPU, where the epoch itself moves some tensors
    # by more than 100% of theirs).
    assert _largest_deviation(again["model"], finished["model"]) < 0.02
    assert resumed.metrics[names.VAL_LOSS] == pytest.approx(
        result.metrics[names.VAL_LOSS], rel=1e-3
    )


def _largest_deviation(state: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """The largest difference between two state dicts' tensors, each relative to the largest
    magnitude in the reference tensor."""
    assert state.keys() == reference.keys()
    return max(
        float((state[key].double() - value.double()).abs().max())
        / max(float(value.double().abs().max()), 1e-12)
        for key, value in reference.items()
    )
