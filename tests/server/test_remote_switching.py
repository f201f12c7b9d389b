"""The same ``visionops train`` command logs to the local store, or to the team server when the
folder's ``.env`` (made from ``.env.remote.example``) names it; exported variables win."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.cli import load_dotenv_file, main
from visionops.server.users import UserAdmin

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_process_state() -> Iterator[None]:
    """``main`` loads ``.env`` straight into ``os.environ`` and MLflow keeps its tracking URI
    per process: start from neither, and leave neither behind for other tests."""
    saved = dict(os.environ)
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    yield
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    os.environ.clear()
    os.environ.update(saved)


def dotenv_from_example(values: dict[str, str]) -> str:
    """The committed example with its placeholders filled in, as a user would."""
    lines = (REPO_ROOT / ".env.remote.example").read_text().splitlines()
    filled = [
        f"{line.split('=', 1)[0]}={values[line.split('=', 1)[0]]}"
        if "=" in line and not line.startswith("#")
        else line
        for line in lines
    ]
    assert {line.split("=", 1)[0] for line in filled if "=" in line and line[0] != "#"} == set(
        values
    ), "the example names other variables than the test fills in"
    return "\n".join(filled) + "\n"


def train(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 0
    return str(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"])


def server_run(stack, run_id: str) -> requests.Response:  # type: ignore[no-untyped-def]
    return requests.get(
        f"{stack.url}/api/2.0/mlflow/runs/get",
        params={"run_id": run_id},
        auth=stack.admin_auth,
        timeout=30,
    )


def test_dotenv_switches_the_same_command_from_local_to_the_team_server(
    new_tracking_store: Callable[..., str],
    shared_stack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fresh_process_state: None,
) -> None:
    # A team member's account, as an admin would create it.
    username, password = f"ml-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
        shared_stack.admin_auth
    )
    UserAdmin(shared_stack.url).create_user(username, password)
    del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]

    experiment = f"switching-{uuid.uuid4().hex[:8]}"
    argv = [
        "train",
        "--recipe",
        "debug",
        "--experiment",
        experiment,
        "--epochs",
        "1",
        "--no-log-model",
        "--output-dir",
        str(tmp_path / "outputs"),
        "--json",
    ]
    local = MlflowClient(tracking_uri=new_tracking_store(tmp_path, "mlflow.db"))

    # No .env, nothing exported: MLflow's default store, ./mlflow.db.
    local_run_id = train(argv, capsys)
    assert local.get_run(local_run_id).data.params["model.name"] == "resnet9"
    assert server_run(shared_stack, local_run_id).status_code == 404

    # The same command with a .env made from the example: the run is on the server.
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # as a new shell would start
    (tmp_path / ".env").write_text(
        dotenv_from_example(
            {
                "MLFLOW_TRACKING_URI": shared_stack.url,
                "MLFLOW_TRACKING_USERNAME": username,
                "MLFLOW_TRACKING_PASSWORD": password,
            }
        )
    )
    remote_run_id = train(argv, capsys)
    response = server_run(shared_stack, remote_run_id)
    assert response.status_code == 200
    run = response.json()["run"]
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["model.name"] == "resnet9"
    assert params["tracking.experiment"] == experiment
    assert run["info"]["user_id"] == username
    assert {m["key"] for m in run["data"]["metrics"]} >= {names.VAL_ACCURACY}
    # Nothing new in the local store.
    local_runs = local.search_runs([local.get_experiment_by_name(experiment).experiment_id])
    assert [r.info.run_id for r in local_runs] == [local_run_id]

    # An exported variable wins over the .env (python-dotenv with override=False).
    os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///exported.db"
    load_dotenv_file()
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///exported.db"
