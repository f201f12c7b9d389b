"""Every command that talks to the team server answers a refused login, an unreachable server
and a refused permission with one ``error:`` line and exit code 2, within seconds.

The commands run as subprocesses (``python -m visionops``), the way users meet them: that
proves the exit code and that no traceback reaches the terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from visionops.cli import EXIT_USER_ERROR
from visionops.server.users import UserAdmin

pytestmark = pytest.mark.integration

#: What users may wait for a refusal, start-up of the Python process included: it tells an
#: answer in seconds from MLflow's default retry schedule (minutes), with room for a loaded
#: 2-core machine, where starting the process alone has taken 15 s.
MAX_SECONDS = 45.0
WRONG_PASSWORD = "not-the-password-0"

COMMANDS = {
    "train": ["train", "--recipe", "debug"],
    "evaluate": ["evaluate", "--model-uri", "models:/no-such-model/1"],
    "tune": ["tune", "--preset", "quick"],
    "promote": ["promote", "--model", "no-such-model", "--alias", "production", "--version", "1"],
    "rollback": ["rollback", "--model", "no-such-model", "--alias", "production"],
    "admin": ["admin", "grant", "--user", "nobody", "--experiment", "x", "--permission", "READ"],
}


@dataclass
class Team:
    url: str
    admin: tuple[str, str]
    reader: tuple[str, str]
    experiment: str
    model: str


@dataclass
class Outcome:
    code: int
    stderr: str
    seconds: float

    @property
    def line(self) -> str:
        """The one line on stderr (fails the test if there is more, or a traceback)."""
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.splitlines()
        assert len(lines) == 1, self.stderr
        assert lines[0].startswith("error: "), self.stderr
        return lines[0]

    @property
    def error_line(self) -> str:
        """The one ``error:`` line, the last; MLflow's own log lines may come before it."""
        assert "Traceback" not in self.stderr, self.stderr
        errors = [line for line in self.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and self.stderr.splitlines()[-1] == errors[0], self.stderr
        return errors[0]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def team(shared_stack: Any) -> Iterator[Team]:
    """On the shared stack: an experiment, a registered model with a version, and a user who
    may only read them (READ granted on the experiment; the server's default on the model)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
        shared_stack.admin_auth
    )
    try:
        admin = UserAdmin(shared_stack.url)
        reader = (unique("reader"), f"pw-{uuid.uuid4().hex}")
        admin.create_user(*reader)
        client = MlflowClient(tracking_uri=shared_stack.url, registry_uri=shared_stack.url)
        experiment = unique("errors-exp")
        experiment_id = client.create_experiment(experiment)
        admin.grant(reader[0], admin.experiment(experiment), "READ")
        model = unique("errors-model")
        client.create_registered_model(model)
        # The version's source holds no model and its run no val/accuracy: the permission is
        # checked before either, so the reader hears about that first.
        run = client.create_run(experiment_id)
        client.create_model_version(model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield Team(shared_stack.url, shared_stack.admin_auth, reader, experiment, model)


def visionops(
    argv: list[str], url: str, username: str | None, password: str | None, cwd: Path
) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = url
    if username is not None and password is not None:
        env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = username, password
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "visionops", *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,  # a regression to MLflow's retries fails here, not after many minutes
    )
    return Outcome(done.returncode, done.stderr, time.monotonic() - start)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_wrong_password_is_one_line_within_seconds(
    team: Team, command: str, tmp_path: Path
) -> None:
    outcome = visionops(COMMANDS[command], team.url, team.reader[0], WRONG_PASSWORD, tmp_path)

    assert outcome.code == EXIT_USER_ERROR, outcome.stderr
    assert outcome.line == (
        f"error: the tracking server at {team.url} refused the login of user "
        f"{team.reader[0]!r} (HTTP 401); set MLFLOW_TRACKING_USERNAME and "
        "MLFLOW_TRACKING_PASSWORD to an account on that server"
    )
    assert WRONG_PASSWORD not in outcome.stderr
    assert outcome.seconds < MAX_SECONDS


def test_no_credentials_at_all_say_so(team: Team, tmp_path: Path) -> None:
    outcome = visionops(COMMANDS["train"], team.url, None, None, tmp_path)
    assert outcome.code == EXIT_USER_ERROR
    assert "asks for a login and no credentials were sent (HTTP 401)" in outcome.line


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unreachable_server_is_one_line_within_seconds(
    command: str, free_port: Callable[[], int], tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    outcome = visionops(COMMANDS[command], url, "someone", "some-password-0", tmp_path)

    assert outcome.code == EXIT_USER_ERROR, outcome.stderr
    assert outcome.line == (
        f"error: cannot reach the tracking server at {url} (connection refused); start it "
        "(`visionops server start`) or point MLFLOW_TRACKING_URI at a running server"
    )
    assert outcome.seconds < MAX_SECONDS


def test_a_reader_training_into_the_experiment_is_refused_edit(
    team: Team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["train", "--recipe", "debug", "--experiment", team.experiment, "--epochs", "1"]
    argv += ["--output-dir", str(tmp_path / "outputs")]
    outcome = visionops(argv, team.url, *team.reader, tmp_path)

    assert outcome.code == EXIT_USER_ERROR, outcome.stderr
    assert outcome.error_line == (
        f"error: the tracking server at {team.url} refused user {team.reader[0]!r} permission "
        "for runs/create (HTTP 403); it needs EDIT on the experiment: ask an admin to run "
        f"`visionops admin grant --user {team.reader[0]} --experiment {team.experiment} "
        "--permission EDIT`"
    )
    admin_client = _admin_client(team, monkeypatch)
    experiment = admin_client.get_experiment_by_name(team.experiment)
    assert experiment is not None
    assert len(admin_client.search_runs([experiment.experiment_id])) == 1  # the fixture's


def test_a_reader_promoting_a_model_is_refused_edit(
    team: Team, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["promote", "--model", team.model, "--version", "1", "--alias", "production"]
    outcome = visionops(argv, team.url, *team.reader, tmp_path)

    assert outcome.code == EXIT_USER_ERROR, outcome.stderr
    assert outcome.error_line == (
        f"error: cannot promote version 1 of {team.model!r} to 'production': the tracking server "
        f"at {team.url} refused user {team.reader[0]!r} permission for model-versions/update "
        "(HTTP 403); it needs EDIT on the registered model: ask an admin to run `visionops admin "
        f"grant --user {team.reader[0]} --model {team.model} --permission EDIT`"
    )
    assert _admin_client(team, monkeypatch).get_registered_model(team.model).aliases == {}


def test_a_reader_granting_is_refused_manage(team: Team, tmp_path: Path) -> None:
    argv = ["admin", "grant", "--user", team.reader[0], "--experiment", team.experiment]
    outcome = visionops([*argv, "--permission", "EDIT"], team.url, *team.reader, tmp_path)

    assert outcome.code == EXIT_USER_ERROR, outcome.stderr
    line = outcome.error_line  # importing mlflow.server may warn first
    assert line.startswith(f"error: granting on experiment {team.experiment!r}")
    assert line.endswith(
        f": the tracking server at {team.url} refused user {team.reader[0]!r} permission for "
        "users/permissions/grant (HTTP 403); it needs MANAGE on the experiment or registered "
        f"model: ask an admin to run `visionops admin grant --user {team.reader[0]} "
        f"--experiment {team.experiment} --permission MANAGE`"
    )


def _admin_client(team: Team, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A client acting as the stack's admin (the test process itself has no credentials)."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", team.admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team.admin[1])
    return MlflowClient(tracking_uri=team.url, registry_uri=team.url)
