"""Authentication and permissions on the real server: who may read, log, delete and grant;
the admin password checks at start-up; artifact paths that try to leave the artifact store."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from visionops.cli import main
from visionops.server.settings import ServerSettings
from visionops.server.users import UserAdmin

pytestmark = pytest.mark.integration

API = "/api/2.0/mlflow"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def call(stack, method: str, endpoint: str, auth, **kwargs) -> requests.Response:  # type: ignore[no-untyped-def]
    return requests.request(method, f"{stack.url}{endpoint}", auth=auth, timeout=30, **kwargs)


@pytest.fixture
def admin(shared_stack, as_user) -> UserAdmin:  # type: ignore[no-untyped-def]
    """The admin's client; MLflow's variables point at the shared stack as the admin."""
    as_user(shared_stack, *shared_stack.admin_auth)
    return UserAdmin(shared_stack.url)


def new_user(admin: UserAdmin, role: str) -> tuple[str, str]:
    username, password = unique(role), f"pw-{uuid.uuid4().hex}"
    admin.create_user(username, password)
    return username, password


def new_experiment(stack) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    name = unique("auth-exp")
    response = call(
        stack, "POST", f"{API}/experiments/create", stack.admin_auth, json={"name": name}
    )
    assert response.status_code == 200, response.text
    return name, response.json()["experiment_id"]


def admin_run(stack, experiment_id: str) -> str:  # type: ignore[no-untyped-def]
    response = call(
        stack,
        "POST",
        f"{API}/runs/create",
        stack.admin_auth,
        json={"experiment_id": experiment_id, "start_time": 0},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["run"]["info"]["run_id"])


def log_metric(stack, auth, run_id: str) -> requests.Response:  # type: ignore[no-untyped-def]
    body = {"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 0, "step": 0}
    return call(stack, "POST", f"{API}/runs/log-metric", auth, json=body)


def admin_cli(argv: list[str], capsys) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    code = main(["admin", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- who may do what ------------------------------------------------------------------------


def test_anonymous_and_wrong_password_requests_get_401(shared_stack) -> None:
    search = f"{API}/experiments/search?max_results=1"
    assert call(shared_stack, "GET", search, None).status_code == 401
    create = call(shared_stack, "POST", f"{API}/experiments/create", None, json={"name": "x"})
    assert create.status_code == 401
    assert create.headers["WWW-Authenticate"] == 'Basic realm="mlflow"'
    wrong = (shared_stack.admin_auth[0], "not-the-password")
    assert call(shared_stack, "GET", search, wrong).status_code == 401


def test_read_user_can_read_but_not_log_or_delete(shared_stack, admin) -> None:
    name, experiment_id = new_experiment(shared_stack)
    run_id = admin_run(shared_stack, experiment_id)
    reader = new_user(admin, "reader")
    admin.grant(reader[0], admin.experiment(name), "READ")

    get = call(shared_stack, "GET", f"{API}/experiments/get?experiment_id={experiment_id}", reader)
    assert get.status_code == 200
    assert get.json()["experiment"]["name"] == name
    create = call(
        shared_stack, "POST", f"{API}/runs/create", reader, json={"experiment_id": experiment_id}
    )
    assert create.status_code == 403
    assert log_metric(shared_stack, reader, run_id).status_code == 403
    delete = call(
        shared_stack,
        "POST",
        f"{API}/experiments/delete",
        reader,
        json={"experiment_id": experiment_id},
    )
    assert delete.status_code == 403

    # Nothing changed: one run (the admin's), no metric, the experiment still active.
    client = MlflowClient()
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [run_id]
    assert client.get_run(run_id).data.metrics == {}
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"


def test_edit_user_can_log_but_not_delete(shared_stack, admin) -> None:
    name, experiment_id = new_experiment(shared_stack)
    editor = new_user(admin, "editor")
    admin.grant(editor[0], admin.experiment(name), "EDIT")

    create = call(
        shared_stack, "POST", f"{API}/runs/create", editor, json={"experiment_id": experiment_id}
    )
    assert create.status_code == 200
    run_id = create.json()["run"]["info"]["run_id"]
    assert log_metric(shared_stack, editor, run_id).status_code == 200
    assert MlflowClient().get_run(run_id).data.metrics == {"loss": 0.5}
    delete = call(
        shared_stack,
        "POST",
        f"{API}/experiments/delete",
        editor,
        json={"experiment_id": experiment_id},
    )
    assert delete.status_code == 403


def test_manage_user_grants_read_to_a_third_user_with_the_cli(
    shared_stack, admin, as_user, capsys
) -> None:
    name, experiment_id = new_experiment(shared_stack)
    run_id = admin_run(shared_stack, experiment_id)
    manager, editor, newcomer = (new_user(admin, r) for r in ("manager", "editor", "newcomer"))
    admin.grant(manager[0], admin.experiment(name), "MANAGE")
    admin.grant(editor[0], admin.experiment(name), "EDIT")
    admin.grant(newcomer[0], admin.experiment(name), "NO_PERMISSIONS")
    get = f"{API}/runs/get?run_id={run_id}"
    assert call(shared_stack, "GET", get, newcomer).status_code == 403

    # An EDIT user may not grant.
    as_user(shared_stack, *editor)
    code, _, err = admin_cli(
        ["grant", "--user", newcomer[0], "--experiment", name, "--permission", "READ"], capsys
    )
    assert code == 2
    assert err.count("\n") == 1
    assert f"refused user {editor[0]!r} permission" in err and "(HTTP 403)" in err
    assert call(shared_stack, "GET", get, newcomer).status_code == 403

    # The MANAGE user may: the newcomer's DENY becomes READ.
    as_user(shared_stack, *manager)
    code, out, _ = admin_cli(
        ["grant", "--user", newcomer[0], "--experiment", name, "--permission", "READ", "--json"],
        capsys,
    )
    assert code == 0
    payload = json.loads(out.splitlines()[-1])
    assert payload == {
        "user": newcomer[0],
        "resource_type": "experiment",
        "resource_id": experiment_id,
        "permission": "READ",
        "mlflow_permission": "READ",
        "replaced": True,
        "resource_exists": True,
        "model_created": False,
    }
    assert call(shared_stack, "GET", get, newcomer).status_code == 200
    assert log_metric(shared_stack, newcomer, run_id).status_code == 403


def test_no_permissions_cannot_read_the_experiment(shared_stack, admin, capsys) -> None:
    name, experiment_id = new_experiment(shared_stack)
    run_id = admin_run(shared_stack, experiment_id)
    other_name, other_id = new_experiment(shared_stack)
    blocked = new_user(admin, "blocked")

    code, out, _ = admin_cli(
        [
            "grant",
            "--user",
            blocked[0],
            "--experiment",
            name,
            "--permission",
            "NO_PERMISSIONS",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    payload = json.loads(out.splitlines()[-1])
    assert (payload["permission"], payload["mlflow_permission"]) == ("NO_PERMISSIONS", "DENY")

    for endpoint in (
        f"{API}/experiments/get?experiment_id={experiment_id}",
        f"{API}/experiments/get-by-name?experiment_name={name}",
        f"{API}/runs/get?run_id={run_id}",
    ):
        assert call(shared_stack, "GET", endpoint, blocked).status_code == 403, endpoint
    # Searches are not refused but filtered (MLflow 3.17): the experiment and its run vanish.
    runs_body = {"experiment_ids": [experiment_id]}
    search = call(shared_stack, "POST", f"{API}/runs/search", blocked, json=runs_body)
    assert search.status_code == 200
    assert search.json().get("runs", []) == []
    admin_search = call(
        shared_stack, "POST", f"{API}/runs/search", shared_stack.admin_auth, json=runs_body
    )
    assert [r["info"]["run_id"] for r in admin_search.json()["runs"]] == [run_id]
    listed = call(
        shared_stack,
        "POST",
        f"{API}/experiments/search",
        blocked,
        json={"max_results": 1000},
    )
    assert listed.status_code == 200
    listed_names = {e["name"] for e in listed.json()["experiments"]}
    assert other_name in listed_names and name not in listed_names
    # The deny is per experiment: the server's default (READ) still holds elsewhere.
    other = call(shared_stack, "GET", f"{API}/experiments/get?experiment_id={other_id}", blocked)
    assert other.status_code == 200
    assert other.json()["experiment"]["name"] == other_name


def test_default_no_permissions_hides_what_was_not_granted(stack_factory, as_user) -> None:
    stack = stack_factory(default_permission="NO_PERMISSIONS")
    as_user(stack, *stack.admin_auth)
    admin = UserAdmin(stack.url)
    name, experiment_id = new_experiment(stack)
    user = new_user(admin, "private")
    get = f"{API}/experiments/get?experiment_id={experiment_id}"
    assert call(stack, "GET", get, user).status_code == 403

    admin.grant(user[0], admin.experiment(name), "READ")
    assert call(stack, "GET", get, user).status_code == 200
    # What users create themselves is theirs (MLflow grants the creator MANAGE).
    own = call(stack, "POST", f"{API}/experiments/create", user, json={"name": unique("own")})
    assert own.status_code == 200
    own_id = own.json()["experiment_id"]
    run = call(stack, "POST", f"{API}/runs/create", user, json={"experiment_id": own_id})
    assert run.status_code == 200


# --- the admin commands ---------------------------------------------------------------------


def test_create_user_from_a_password_file_can_then_log_in(
    shared_stack, admin, tmp_path: Path, capsys
) -> None:
    username = unique("alice")
    password_file = tmp_path / "alice.pw"
    password_file.write_text("alice-long-password-1\n")  # the line break is not part of it
    argv = ["create-user", "--username", username, "--password-file", str(password_file)]

    code, out, _ = admin_cli([*argv, "--json"], capsys)
    assert code == 0
    payload = json.loads(out.splitlines()[-1])
    assert (payload["username"], payload["is_admin"]) == (username, False)
    search = f"{API}/experiments/search?max_results=1"
    response = call(shared_stack, "GET", search, (username, "alice-long-password-1"))
    assert response.status_code == 200
    assert response.json()["experiments"]
    assert (
        call(shared_stack, "GET", search, (username, "alice-long-password-1\n")).status_code == 401
    )

    code, out, err = admin_cli(argv, capsys)
    assert code == 2
    assert err == f"error: creating user {username!r}: user {username!r} already exists\n"


def test_create_admin_from_the_environment_variable(
    shared_stack, admin, as_user, monkeypatch, capsys
) -> None:
    username, password = unique("ops"), f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("VISIONOPS_NEW_USER_PASSWORD", password)
    code, out, _ = admin_cli(["create-user", "--username", username, "--admin"], capsys)
    assert code == 0
    assert out == f"created admin {username!r} (id {out.split('(id ')[1]}"
    monkeypatch.delenv("VISIONOPS_NEW_USER_PASSWORD")

    # The new admin may create users; a plain user may not.
    as_user(shared_stack, username, password)
    plain, plain_password = new_user(UserAdmin(shared_stack.url), "plain")
    as_user(shared_stack, plain, plain_password)
    monkeypatch.setenv("VISIONOPS_NEW_USER_PASSWORD", f"pw-{uuid.uuid4().hex}")
    code, _, err = admin_cli(["create-user", "--username", unique("nope")], capsys)
    assert code == 2
    assert "(HTTP 403); it needs an admin account" in err


def test_create_user_without_a_password_source_fails_before_calling_the_server(
    shared_stack, admin, monkeypatch, capsys
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: no prompt
    username = unique("nopass")
    code, _, err = admin_cli(["create-user", "--username", username], capsys)
    assert code == 2
    assert "--password-file" in err and "VISIONOPS_NEW_USER_PASSWORD" in err
    users = call(
        shared_stack, "GET", f"{API}/users/get?username={username}", shared_stack.admin_auth
    )
    assert users.status_code == 404


def test_grant_errors_are_one_line(shared_stack, admin, capsys) -> None:
    name, _ = new_experiment(shared_stack)
    missing = unique("no-such-experiment")
    code, _, err = admin_cli(
        ["grant", "--user", "admin", "--experiment", missing, "--permission", "READ"], capsys
    )
    assert code == 2
    assert err == f"error: no experiment named or numbered {missing!r} on {shared_stack.url}\n"
    code, _, err = admin_cli(
        ["grant", "--user", "admin", "--experiment", "987654321", "--permission", "READ"], capsys
    )
    assert code == 2 and "no experiment named or numbered '987654321'" in err

    ghost = unique("ghost")
    code, _, err = admin_cli(
        ["grant", "--user", ghost, "--experiment", name, "--permission", "READ"], capsys
    )
    assert code == 2
    assert err.startswith("error: granting on experiment") and f"no user {ghost!r}" in err
    assert err.count("\n") == 1


def test_grant_is_idempotent_and_accepts_ids_models_and_revoke(shared_stack, admin, capsys) -> None:
    name, experiment_id = new_experiment(shared_stack)
    user = new_user(admin, "dev")
    base = ["grant", "--user", user[0], "--json"]

    results = []
    for target, permission in (
        (name, "READ"),
        (experiment_id, "EDIT"),  # by ID, replacing READ
        (name, "edit"),  # again, lower case
    ):
        code, out, _ = admin_cli(
            [*base, "--experiment", target, "--permission", permission], capsys
        )
        assert code == 0
        results.append(json.loads(out.splitlines()[-1]))
    assert [(r["permission"], r["replaced"]) for r in results] == [
        ("READ", False),
        ("EDIT", True),
        ("EDIT", True),
    ]
    assert {r["resource_id"] for r in results} == {experiment_id}
    auth = admin._auth
    assert auth.get_user_permission(user[0], "experiment", experiment_id).permission == "EDIT"
    create = call(
        shared_stack, "POST", f"{API}/runs/create", user, json={"experiment_id": experiment_id}
    )
    assert create.status_code == 200

    # A model not registered yet is created by the grant, so that the grantee registering the
    # first version (as mlflow.register_model does: create the model, then a version) keeps
    # EDIT instead of becoming its manager by MLflow's creator rule.
    model = unique("vision-classifier")
    code, out, err = admin_cli([*base, "--model", model, "--permission", "EDIT"], capsys)
    assert code == 0
    payload = json.loads(out.splitlines()[-1])
    assert (payload["resource_exists"], payload["model_created"]) == (False, True)
    assert f"created the registered model {model!r} (no versions yet)" in err
    model_api = f"{API}/registered-models"
    created = call(shared_stack, "POST", f"{model_api}/create", user, json={"name": model})
    assert created.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    version = call(
        shared_stack,
        "POST",
        f"{API}/model-versions/create",
        user,
        json={
            "name": model,
            "source": f"{create.json()['run']['info']['artifact_uri']}/model",
            "run_id": create.json()["run"]["info"]["run_id"],
        },
    )
    assert version.status_code == 200, version.text
    assert auth.get_user_permission(user[0], "registered_model", model).permission == "EDIT"
    described = call(
        shared_stack,
        "PATCH",
        f"{model_api}/update",
        user,
        json={"name": model, "description": "by the EDIT user"},
    )
    assert described.status_code == 200
    deleted = call(shared_stack, "DELETE", f"{model_api}/delete", user, json={"name": model})
    assert deleted.status_code == 403

    # Revoking falls back to the server's default permission (READ); a second revoke is a no-op.
    revoke = ["revoke", "--user", user[0], "--experiment", name, "--json"]
    code, out, _ = admin_cli(revoke, capsys)
    assert (code, json.loads(out.splitlines()[-1])["revoked"]) == (0, True)
    assert auth.get_user_permission(user[0], "experiment", experiment_id).permission == "READ"
    code, out, _ = admin_cli(revoke, capsys)
    assert (code, json.loads(out.splitlines()[-1])["revoked"]) == (0, False)


# --- start-up refusals ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("password1234", "refusing to start with MLflow's default admin password"),
        (None, "no admin password: set VISIONOPS_ADMIN_PASSWORD"),
        ("short-pw", "the admin password needs at least 12 characters"),
    ],
)
def test_server_refuses_to_start_with_a_weak_admin_password(
    tmp_path: Path, password: str | None, message: str
) -> None:
    port = free_port()
    state_dir = tmp_path / "state"
    env = {
        **_clean_environ(),
        "VISIONOPS_SERVER_PORT": str(port),
        "VISIONOPS_SERVER_STATE_DIR": str(state_dir),
        "VISIONOPS_TRACKING_DB": unique("never_created").replace("-", "_"),
    }
    if password is not None:
        env["VISIONOPS_ADMIN_PASSWORD"] = password
    command = [sys.executable, "-m", "visionops", "server", "start", "--detach"]
    try:
        done = subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
    finally:
        _stop_any_server(env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert "Traceback" not in done.stderr
    # Nothing started and the password never reached the disk.
    assert not (state_dir / "server.pid").exists()
    assert not (state_dir / "basic_auth.ini").exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=5)


def _clean_environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("VISIONOPS_", "MLFLOW_"))}


def _stop_any_server(env: dict[str, str]) -> None:
    """If the refusal ever broke, stop what the test started rather than leak a server."""
    from visionops.server.databases import drop_databases
    from visionops.server.process import running_server

    settings = ServerSettings.from_env({**env, "VISIONOPS_ADMIN_PASSWORD": "x" * 12})
    server = running_server(settings)
    if server is not None:
        server.stop()
        drop_databases(settings)


# --- artifact paths that try to leave the store ---------------------------------------------


@pytest.fixture(scope="module")
def artifact_targets(shared_stack) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A run with one artifact and a model version whose source is the run's folder."""
    import os

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = (
        shared_stack.admin_auth
    )
    try:
        client = MlflowClient(tracking_uri=shared_stack.url, registry_uri=shared_stack.url)
        experiment_id = client.create_experiment(unique("traversal"))
        run = client.create_run(experiment_id)
        client.log_text(run.info.run_id, "hello from the store", "notes/hello.txt")
        model = unique("traversal-model")
        client.create_registered_model(model)
        client.create_model_version(model, f"{run.info.artifact_uri}/notes", run_id=run.info.run_id)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {"experiment": experiment_id, "run": run.info.run_id, "model": model}


def raw_get(stack, path: str) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    """GET ``path`` byte for byte as the admin: no client-side normalisation of ``..``."""
    token = base64.b64encode(":".join(stack.admin_auth).encode()).decode()
    connection = http.client.HTTPConnection(stack.settings.host, stack.settings.port, timeout=30)
    try:
        connection.request("GET", path, headers={"Authorization": f"Basic {token}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_legitimate_artifact_requests_succeed(shared_stack, artifact_targets) -> None:
    run, experiment = artifact_targets["run"], artifact_targets["experiment"]
    model = artifact_targets["model"]
    for path in (
        f"/get-artifact?path=notes/hello.txt&run_uuid={run}",
        f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/notes/hello.txt",
        f"/model-versions/get-artifact?path=hello.txt&name={model}&version=1",
    ):
        status, body = raw_get(shared_stack, path)
        assert (status, body) == (200, b"hello from the store"), path


TRAVERSALS = [
    "/get-artifact?path=../../../../etc/passwd&run_uuid={run}",
    "/get-artifact?path=notes/../../../../../../etc/passwd&run_uuid={run}",
    "/get-artifact?path=..%2F..%2F..%2F..%2Fetc%2Fpasswd&run_uuid={run}",
    "/get-artifact?path=%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd&run_uuid={run}",
    "/get-artifact?path=..%252F..%252F..%252F..%252Fetc%252Fpasswd&run_uuid={run}",
    "/get-artifact?path=/etc/passwd&run_uuid={run}",
    "/get-artifact?path=%2Fetc%2Fpasswd&run_uuid={run}",
    "/ajax-api/2.0/mlflow-artifacts/artifacts/..%2F..%2F..%2Fetc%2Fpasswd",
    "/ajax-api/2.0/mlflow-artifacts/artifacts/..%252F..%252F..%252Fetc%252Fpasswd",
    "/api/2.0/mlflow-artifacts/artifacts/../../etc/passwd",
    "/api/2.0/mlflow-artifacts/artifacts/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
    "/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/../../../../../../etc/passwd",
    "/api/2.0/mlflow-artifacts/artifacts/{experiment}/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/api/2.0/mlflow-artifacts/artifacts/%2Fetc%2Fpasswd",
    "/model-versions/get-artifact?path=../../../../etc/passwd&name={model}&version=1",
    "/model-versions/get-artifact?path=..%2F..%2F..%2F..%2Fetc%2Fpasswd&name={model}&version=1",
    "/model-versions/get-artifact?path=..%252F..%252Fetc%252Fpasswd&name={model}&version=1",
    "/model-versions/get-artifact?path=/etc/passwd&name={model}&version=1",
]


@pytest.mark.parametrize("template", TRAVERSALS)
def test_path_traversal_is_refused(shared_stack, artifact_targets, template: str) -> None:
    status, body = raw_get(shared_stack, template.format(**artifact_targets))
    assert 400 <= status < 500, (status, body[:200])
    assert b"root:" not in body
    assert b"/bin/" not in body
