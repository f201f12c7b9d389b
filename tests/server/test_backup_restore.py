"""The backup/restore drill on a real stack: back up a live server, lose both databases,
restore, and find every run, metric, model version, alias, user and grant as it was.

The scripts run as operators run them (scripts/ops/*.sh with VISIONOPS_* settings); the
server is read only through its API.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from visionops.config import TrainConfig, with_fields
from visionops.server.databases import drop_databases
from visionops.server.settings import ServerSettings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ANALYST = ("drill-analyst", "analyst-password-1")


def run_script(
    script: str, *args: str, settings: ServerSettings, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """scripts/ops/SCRIPT with the stack's settings in the environment, as an operator runs it."""
    env = {
        **os.environ,
        "VISIONOPS_POSTGRES_URI": settings.postgres_uri,
        "VISIONOPS_TRACKING_DB": settings.tracking_db,
        "VISIONOPS_AUTH_DB": settings.auth_db,
        "VISIONOPS_SERVER_HOST": settings.host,
        "VISIONOPS_SERVER_PORT": str(settings.port),
        "VISIONOPS_SERVER_STATE_DIR": str(settings.state_dir),
    }
    # The artifact store comes from what the server recorded in its state folder, as for a
    # `server start --local-s3-port` server, whose settings name no store at all.
    for name in ("VISIONOPS_ARTIFACTS_DESTINATION", "MLFLOW_S3_ENDPOINT_URL"):
        env.pop(name, None)
    return subprocess.run(
        [str(REPO / "scripts" / "ops" / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _api(stack: Any, method: str, path: str, **kwargs: Any) -> Any:
    response = requests.request(
        method, f"{stack.url}{path}", auth=stack.admin_auth, timeout=30, **kwargs
    )
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


def snapshot(stack: Any) -> dict[str, Any]:
    """Everything the drill must bring back, as the server's API returns it (as admin)."""
    experiments = _api(
        stack,
        "POST",
        "/api/2.0/mlflow/experiments/search",
        json={"max_results": 1000, "view_type": "ALL"},
    )["experiments"]
    experiment_ids = [experiment["experiment_id"] for experiment in experiments]
    runs = _api(
        stack,
        "POST",
        "/api/2.0/mlflow/runs/search",
        json={"experiment_ids": experiment_ids, "max_results": 1000, "run_view_type": "ALL"},
    ).get("runs", [])
    histories = {}
    for run in runs:
        run_id = run["info"]["run_id"]
        for metric in run["data"].get("metrics", []):
            history = _api(
                stack,
                "GET",
                "/api/2.0/mlflow/metrics/get-history",
                params={"run_id": run_id, "metric_key": metric["key"], "max_results": 25000},
            )["metrics"]
            histories[f"{run_id}/{metric['key']}"] = history
        histories[f"{run_id}/artifacts"] = _api(
            stack, "GET", "/api/2.0/mlflow/artifacts/list", params={"run_id": run_id}
        ).get("files", [])
    model_names = [
        model["name"]
        for model in _api(stack, "GET", "/api/2.0/mlflow/registered-models/search").get(
            "registered_models", []
        )
    ]
    versions = _api(stack, "GET", "/api/2.0/mlflow/model-versions/search").get("model_versions", [])
    return {
        "experiments": experiments,
        "runs": runs,
        "histories": histories,
        "logged_models": _api(
            stack,
            "POST",
            "/api/2.0/mlflow/logged-models/search",
            json={"experiment_ids": experiment_ids},
        ).get("models", []),
        "registered_models": [
            _api(stack, "GET", "/api/2.0/mlflow/registered-models/get", params={"name": name})[
                "registered_model"
            ]
            for name in model_names
        ],
        "model_versions": [
            _api(
                stack,
                "GET",
                "/api/2.0/mlflow/model-versions/get",
                params={"name": version["name"], "version": version["version"]},
            )["model_version"]
            for version in versions
        ],
        "users": _api(stack, "GET", "/api/2.0/mlflow/users/list")["users"],
    }


def assert_same(after: dict[str, Any], before: dict[str, Any]) -> None:
    """Section by section, so that a failure names what the restore lost."""
    assert after.keys() == before.keys()
    for section in before:
        assert canonical(after[section]) == canonical(before[section]), section


def canonical(value: Any) -> Any:
    """``value`` with every list of objects sorted: the API promises no order for params, tags
    or metric points, and a restore rewrites the order of rows on disk."""
    if isinstance(value, dict):
        return {key: canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [canonical(item) for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    return value


def _populate(stack: Any, tiny_config: TrainConfig) -> dict[str, Any]:
    """Train and register a model, alias it, add a user with grants: what a team leaves."""
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    from visionops.training import train

    result = train(
        with_fields(
            tiny_config, tracking_uri=stack.url, register_as="drill-model", system_metrics=False
        )
    )
    assert result.registered_version == 1
    assert result.run_id is not None
    client = MlflowClient(tracking_uri=stack.url, registry_uri=stack.url)
    client.set_registered_model_alias("drill-model", "champion", "1")
    experiment_id = client.get_run(result.run_id).info.experiment_id
    auth = get_app_client("basic-auth", tracking_uri=stack.url)
    auth.create_user(*ANALYST)
    auth.grant_user_permission(ANALYST[0], "experiment", experiment_id, "EDIT")
    auth.grant_user_permission(ANALYST[0], "registered_model", "drill-model", "READ")
    return {"run_id": result.run_id, "experiment_id": experiment_id}


def _grants(stack: Any, experiment_id: str) -> tuple[str, str]:
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=stack.url)
    return (
        auth.get_user_permission(ANALYST[0], "experiment", experiment_id).permission,
        auth.get_user_permission(ANALYST[0], "registered_model", "drill-model").permission,
    )


def _whoami(stack: Any, username: str, password: str) -> int | str:
    response = requests.get(
        f"{stack.url}/api/2.0/mlflow/users/current", auth=(username, password), timeout=30
    )
    return response.json()["user"]["username"] if response.ok else response.status_code


def test_backup_and_restore_bring_back_everything(
    stack_factory, as_user, tiny_config: TrainConfig, tmp_path: Path
) -> None:
    stack = stack_factory()
    as_user(stack, *stack.admin_auth)
    populated = _populate(stack, tiny_config)
    before = snapshot(stack)
    grants_before = _grants(stack, populated["experiment_id"])
    objects_before = stack.s3_client().list_objects_v2(Bucket=stack.bucket)["KeyCount"]
    config_before = _download_config(stack, populated["run_id"], tmp_path / "before")
    assert grants_before == ("EDIT", "READ")
    assert len(before["runs"]) == 1
    assert before["logged_models"]
    assert sorted(user["username"] for user in before["users"]) == ["admin", ANALYST[0]]
    assert before["model_versions"][0]["aliases"] == ["champion"]
    assert before["registered_models"][0]["aliases"] == [{"alias": "champion", "version": "1"}]
    assert len(before["histories"][f"{populated['run_id']}/artifacts"]) > 0

    # Back up the live server.
    backup = tmp_path / "backups" / "drill"
    result = run_script("backup-mlflow.sh", "--output", str(backup), settings=stack.settings)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in backup.iterdir()) == [
        "auth.dump",
        "manifest.json",
        "tracking.dump",
    ]
    manifest = json.loads((backup / "manifest.json").read_text())
    tracking, auth = manifest["databases"]["tracking"], manifest["databases"]["auth"]
    assert (tracking["name"], auth["name"]) == (stack.settings.tracking_db, stack.settings.auth_db)
    for entry in (tracking, auth):
        dump = (backup / entry["file"]).read_bytes()
        assert dump.startswith(b"PGDMP")  # pg_dump's custom format
        assert hashlib.sha256(dump).hexdigest() == entry["sha256"]
    counts = tracking["row_counts"]
    assert counts["public.runs"] == 1
    assert counts["public.experiments"] == len(before["experiments"])
    assert counts["public.model_versions"] == 1
    assert counts["public.registered_model_aliases"] == 1
    assert counts["public.metrics"] == sum(
        len(history)
        for key, history in before["histories"].items()
        if not key.endswith("/artifacts")
    )
    assert counts["public.params"] == len(before["runs"][0]["data"]["params"])
    assert auth["row_counts"]["public.users"] == 2
    assert auth["row_counts"]["public.role_permissions"] >= 2
    assert tracking["alembic_revision"] and auth["alembic_revision"]
    assert manifest["mlflow_version"] == _installed_mlflow()
    assert manifest["source"]["host"] == "127.0.0.1"
    assert manifest["artifacts"]["included"] is False
    assert manifest["artifacts"]["destination"] == stack.settings.artifacts_destination
    # The command copies the store that holds this run's files: that bucket, at that endpoint.
    copy = manifest["artifacts"]["backup_command"].split()
    assert copy == [
        *("aws", "s3", "sync", "--endpoint-url", stack.s3_endpoint),
        *(stack.settings.artifacts_destination, "BACKUP_DIR/artifacts"),
    ]
    bucket, prefix = copy[5].removeprefix("s3://").split("/", 1)
    listed = stack.s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert listed["KeyCount"] == objects_before > 0
    assert "not included" in result.stdout

    # Replacing the databases of a server that still runs is refused, even with --yes.
    refused = run_script("restore-mlflow.sh", str(backup), "--yes", settings=stack.settings)
    assert refused.returncode == 1
    assert "stop it before replacing" in refused.stderr
    assert_same(snapshot(stack), before)

    # The disaster: the server stops and both databases are lost.
    stack.server.stop()
    drop_databases(stack.settings)
    assert not _existing_databases(stack.settings)

    result = run_script("restore-mlflow.sh", str(backup), "--yes", settings=stack.settings)
    assert result.returncode == 0, result.stderr
    assert "checksums match the manifest" in result.stderr
    assert "start the server" in result.stdout
    assert _existing_databases(stack.settings) == {
        stack.settings.tracking_db,
        stack.settings.auth_db,
    }
    upgrade = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "db",
            "upgrade",
            stack.settings.database_uri(stack.settings.tracking_db),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert upgrade.returncode == 0, upgrade.stderr

    stack.restart_server()
    assert_same(snapshot(stack), before)
    assert _grants(stack, populated["experiment_id"]) == grants_before
    assert _whoami(stack, *stack.admin_auth) == stack.admin_auth[0]
    assert _whoami(stack, *ANALYST) == ANALYST[0]
    assert _whoami(stack, ANALYST[0], "not-the-password") == 401
    # The artifacts never left S3 and the restored runs still point at them.
    assert stack.s3_client().list_objects_v2(Bucket=stack.bucket)["KeyCount"] == objects_before
    assert _download_config(stack, populated["run_id"], tmp_path / "after") == config_before


def test_restore_refuses_to_replace_existing_databases_without_yes(
    shared_stack, tmp_path: Path
) -> None:
    backup = tmp_path / "backup"
    made = run_script("backup-mlflow.sh", "--output", str(backup), settings=shared_stack.settings)
    assert made.returncode == 0, made.stderr
    result = run_script("restore-mlflow.sh", str(backup), settings=shared_stack.settings)
    assert result.returncode == 1
    assert "already exist" in result.stderr and "--yes" in result.stderr
    assert shared_stack.settings.tracking_db in result.stderr
    # Nothing was touched: the server still serves its data.
    response = requests.get(
        f"{shared_stack.url}/api/2.0/mlflow/experiments/search?max_results=5",
        auth=shared_stack.admin_auth,
        timeout=30,
    )
    assert response.status_code == 200
    assert response.json()["experiments"]


def test_restore_refuses_a_backup_whose_dump_does_not_match_its_checksum(
    shared_stack, tmp_path: Path
) -> None:
    backup = tmp_path / "backup"
    made = run_script("backup-mlflow.sh", "--output", str(backup), settings=shared_stack.settings)
    assert made.returncode == 0, made.stderr
    with (backup / "auth.dump").open("ab") as dump:
        dump.write(b"\0")
    # Into fresh database names: only the checksum can stop it.
    target = shared_stack.settings.model_copy(
        update={
            "tracking_db": f"{shared_stack.settings.tracking_db}_restored",
            "auth_db": f"{shared_stack.settings.auth_db}_restored",
        }
    )
    result = run_script("restore-mlflow.sh", str(backup), "--yes", settings=target)
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr and "auth.dump" in result.stderr
    assert not _existing_databases(target)


def test_a_restore_that_does_not_match_the_manifest_fails_and_drops_what_it_created(
    shared_stack, tmp_path: Path
) -> None:
    backup = tmp_path / "backup"
    made = run_script("backup-mlflow.sh", "--output", str(backup), settings=shared_stack.settings)
    assert made.returncode == 0, made.stderr
    manifest = json.loads((backup / "manifest.json").read_text())
    manifest["databases"]["auth"]["row_counts"]["public.users"] += 1
    (backup / "manifest.json").write_text(json.dumps(manifest))
    target = shared_stack.settings.model_copy(
        update={
            "tracking_db": f"{shared_stack.settings.tracking_db}_drill",
            "auth_db": f"{shared_stack.settings.auth_db}_drill",
        }
    )
    try:
        result = run_script("restore-mlflow.sh", str(backup), settings=target)
        assert result.returncode == 1
        users = manifest["databases"]["auth"]["row_counts"]["public.users"]
        assert f"public.users: backup {users}, restored {users - 1}" in result.stderr
        assert "dropped the partly restored" in result.stderr
        assert not _existing_databases(target)
    finally:
        drop_databases(target)


def test_backup_refuses_an_existing_folder_and_leaves_nothing_behind_on_failure(
    shared_stack, tmp_path: Path
) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    result = run_script(
        "backup-mlflow.sh", "--output", str(existing), settings=shared_stack.settings
    )
    assert result.returncode == 1
    assert "already exists" in result.stderr
    missing = shared_stack.settings.model_copy(update={"auth_db": "visionops_no_such_database"})
    failed = tmp_path / "failed"
    result = run_script("backup-mlflow.sh", "--output", str(failed), settings=missing)
    assert result.returncode == 1
    assert "visionops_no_such_database" in result.stderr
    assert not list(tmp_path.glob("failed*"))
    assert list(existing.iterdir()) == []


def _existing_databases(settings: ServerSettings) -> set[str]:
    with psycopg.connect(settings.database_uri("postgres"), autocommit=True) as connection:
        rows = connection.execute(
            "SELECT datname FROM pg_database WHERE datname = ANY(%s)",
            ([settings.tracking_db, settings.auth_db],),
        ).fetchall()
    return {row[0] for row in rows}


def _installed_mlflow() -> str:
    import importlib.metadata

    return importlib.metadata.version("mlflow")


def _download_config(stack: Any, run_id: str, folder: Path) -> str:
    """The run's config.yaml artifact, fetched through the server from S3."""
    from mlflow import MlflowClient

    path = MlflowClient(tracking_uri=stack.url).download_artifacts(
        run_id, "config.yaml", str(folder)
    )
    text = Path(path).read_text()
    assert "epochs" in text
    return text
