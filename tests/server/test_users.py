"""The parts of user administration that need no server: where passwords come from, which
server is addressed, how permissions map onto MLflow's."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from mlflow.server.auth.permissions import RESOURCE_GRANTABLE_PERMISSIONS, get_permission

from visionops.cli import main
from visionops.server.settings import PERMISSIONS
from visionops.server.users import (
    MLFLOW_PERMISSIONS,
    UserAdmin,
    UserAdminError,
    new_user_password,
)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_password_file_wins_and_loses_only_its_line_break(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text(" spaced password \n")
    environ = {"VISIONOPS_NEW_USER_PASSWORD": "from-the-environment"}
    assert new_user_password(path, environ, FakeTerminal()) == " spaced password "


def test_password_from_the_environment_then_the_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"VISIONOPS_NEW_USER_PASSWORD": "from-the-environment"}
    assert new_user_password(None, environ, io.StringIO()) == "from-the-environment"

    answers = iter(["typed-password-1", "typed-password-1"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    assert new_user_password(None, {}, FakeTerminal()) == "typed-password-1"

    answers = iter(["typed-password-1", "typed-password-2"])
    with pytest.raises(UserAdminError, match="the two passwords differ"):
        new_user_password(None, {}, FakeTerminal())


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "No such file"), ("\n", "is empty")],
)
def test_unusable_password_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "pw"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserAdminError, match=message):
        new_user_password(path, {}, io.StringIO())


def test_no_password_source_without_a_terminal() -> None:
    with pytest.raises(UserAdminError, match="pass --password-file FILE, set VISIONOPS_NEW"):
        new_user_password(None, {}, io.StringIO())


def test_every_offered_permission_maps_onto_a_grantable_mlflow_permission() -> None:
    assert tuple(MLFLOW_PERMISSIONS) == PERMISSIONS
    assert set(MLFLOW_PERMISSIONS.values()) <= RESOURCE_GRANTABLE_PERMISSIONS
    assert MLFLOW_PERMISSIONS["NO_PERMISSIONS"] == "DENY"
    assert not get_permission(MLFLOW_PERMISSIONS["NO_PERMISSIONS"]).can_read


@pytest.mark.parametrize(
    ("uri", "message"),
    [(None, "pass --tracking-uri or set MLFLOW_TRACKING_URI"), ("sqlite:///x.db", "not an http")],
)
def test_user_admin_needs_a_server_url(uri: str | None, message: str) -> None:
    with pytest.raises(UserAdminError, match=message):
        UserAdmin(uri)


def test_admin_command_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["admin", "grant", "--user", "a", "--model", "m", "--permission", "READ"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "error: no tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[:-1], "WRITE"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'WRITE'" in capsys.readouterr().err
