"""``visionops alias show|set`` against a real (sqlite) MLflow registry.

The versions are registered from a folder holding only an ``MLmodel``: setting and reading
aliases loads nothing, but an alias moves only to a version whose model files exist.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from visionops.cli import main

MODEL = "aliased-clf"


@pytest.fixture
def store(new_tracking_store: Callable[..., str], tmp_path: Path) -> str:
    uri = new_tracking_store(tmp_path, "mlflow.db")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    client = MlflowClient(uri)
    client.create_registered_model(MODEL)
    for _ in range(3):
        client.create_model_version(MODEL, str(tmp_path / "model"))
    return uri


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out.strip().splitlines()[-1]), captured.err


def test_set_points_the_alias_and_rollback_undoes_it(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--model", MODEL, "--tracking-uri", store]
    code, moved, _ = run_json(
        capsys, "alias", "set", *base, "--alias", "candidate", "--version", "2"
    )
    assert code == 0
    assert (moved["alias"], moved["version"], moved["previous_version"]) == ("candidate", "2", None)
    code, moved, _ = run_json(
        capsys, "alias", "set", *base, "--alias", "candidate", "--version", "3"
    )
    assert moved["previous_version"] == "2"

    code, shown, _ = run_json(capsys, "alias", "show", *base)
    assert (code, shown) == (0, {"model": MODEL, "aliases": {"candidate": "3"}})

    # The history knows both moves, so the existing rollback goes back to version 2.
    assert main(["rollback", *base, "--alias", "candidate"]) == 0
    assert run_json(capsys, "alias", "show", *base)[1]["aliases"] == {"candidate": "2"}
    history = json.loads(
        MlflowClient(store).get_registered_model(MODEL).tags["visionops.alias_history.candidate"]
    )
    assert [entry["reason"] for entry in history][:2] == ["alias set", "alias set"]


def test_show_require_exits_2_when_the_alias_is_missing(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--model", MODEL, "--tracking-uri", store]
    code, shown, err = run_json(capsys, "alias", "show", *base, "--require", "candidate")
    assert code == 2
    assert shown == {"model": MODEL, "aliases": {}}  # what there is, printed first
    assert "has no 'candidate' alias" in err

    assert main(["alias", "show", "--model", "nope", "--tracking-uri", store]) == 2
    assert "no registered model is named 'nope'" in capsys.readouterr().err


def test_set_refuses_production_missing_versions_and_bad_aliases(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["alias", "set", "--model", MODEL, "--tracking-uri", store]
    assert main([*base, "--alias", "production", "--version", "1"]) == 2
    assert "use `visionops promote --alias production`" in capsys.readouterr().err
    assert main([*base, "--alias", "candidate", "--version", "9"]) == 2
    assert f"model '{MODEL}' has no version 9" in capsys.readouterr().err
    assert main([*base, "--alias", "v2", "--version", "1"]) == 2
    assert "reserved by MLflow" in capsys.readouterr().err
    assert MlflowClient(store).get_registered_model(MODEL).aliases == {}


def test_set_refuses_a_version_whose_model_files_are_gone(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emptied = tmp_path / "emptied"
    emptied.mkdir()
    version = MlflowClient(store).create_model_version(MODEL, str(emptied)).version
    argv = ["alias", "set", "--model", MODEL, "--tracking-uri", store, "--alias", "candidate"]

    assert main([*argv, "--version", str(version)]) == 2
    assert capsys.readouterr().err == (
        f"error: version {version} of '{MODEL}' has no model files: no MLmodel at {emptied} in "
        f"the artifact store of {store} (lost, e.g. with a local S3 that restarted, or never "
        "uploaded); register the model again\n"
    )
    assert MlflowClient(store).get_registered_model(MODEL).aliases == {}
