"""Promotion and rollback through the authenticated team server (PostgreSQL registry, models
loaded for the latency check through the server's artifact proxy from S3)."""

from __future__ import annotations

import json
import uuid

import mlflow
import pytest

from visionops import names
from visionops.cli import main
from visionops.config import with_fields
from visionops.training import train

pytestmark = pytest.mark.integration

MODEL = "registry-e2e-model"


def test_promote_and_rollback_through_the_team_server(
    shared_stack, as_user, tiny_config, capsys
) -> None:
    as_user(shared_stack, *shared_stack.admin_auth)
    result = train(with_fields(tiny_config, tracking_uri=shared_stack.url, register_as=MODEL))
    # A second version of the same run: equal val/accuracy passes the default zero-drop gate.
    second = mlflow.register_model(result.model_uri, MODEL)
    assert (result.registered_version, str(second.version)) == (1, "2")
    gate = ["--alias", "production", "--latency-runs", "3", "--latency-budget-ms", "10000"]

    def cli(*argv: str) -> tuple[int, dict[str, object], str]:
        code = main([*argv, "--model", MODEL, "--json"])
        out, err = capsys.readouterr()
        return code, (json.loads(out.strip().splitlines()[-1]) if code != 2 else {}), err

    for version in ("1", "2"):
        code, payload, _ = cli("promote", "--version", version, *gate)
        assert (code, payload["decision"]) == (0, "approved")

    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias(MODEL, "production").version == "2"
    tags = client.get_model_version(MODEL, "2").tags
    assert tags["visionops.promotion.production.decided_by"] == shared_stack.admin_auth[0]
    assert tags["visionops.promotion.production.incumbent_version"] == "1"
    assert float(
        tags[names.PROMOTION_TAG_PREFIX + "production.candidate_val_accuracy"]
    ) == pytest.approx(result.metrics[names.VAL_ACCURACY])

    # Rolling back needs EDIT on the model: anonymous callers (401) and users with only the
    # default READ (403) are refused and nothing moves; a user granted EDIT rolls back.
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=shared_stack.url)
    for user in ("registry-editor", "registry-reader"):
        auth.create_user(user, f"{user}-password-0")
    auth.grant_user_permission("registry-editor", "registered_model", MODEL, "EDIT")
    refusals = {
        (None, None): "error: the tracking server at {url} asks for a login and no credentials "
        "were sent (HTTP 401)",
        ("registry-reader", "registry-reader-password-0"): "error: cannot roll back 'production'"
        " of '{model}': the tracking server at {url} refused user 'registry-reader' permission",
    }
    for (user, password), refusal in refusals.items():
        as_user(shared_stack, user, password)
        code, _, err = cli("rollback", "--alias", "production")
        assert code == 2 and err.startswith(refusal.format(url=shared_stack.url, model=MODEL)), err
        assert len(err.strip().splitlines()) == 1
    as_user(shared_stack, *shared_stack.admin_auth)
    assert client.get_model_version_by_alias(MODEL, "production").version == "2"

    as_user(shared_stack, "registry-editor", "registry-editor-password-0")
    code, payload, _ = cli("rollback", "--alias", "production")
    assert (code, payload["from_version"], payload["to_version"]) == (0, "2", "1")
    assert payload["rolled_back_by"] == "registry-editor"
    assert client.get_model_version_by_alias(MODEL, "production").version == "1"
    history = json.loads(
        client.get_registered_model(MODEL).tags["visionops.alias_history.production"]
    )
    assert [(e["version"], e["by"], e["rolled_back"]) for e in history] == [
        ("1", "admin", False),
        ("2", "admin", True),
        ("1", "registry-editor", False),
    ]
    demoted = client.get_model_version(MODEL, "2").tags
    assert demoted["visionops.rollback.production.demoted_by"] == "registry-editor"
    assert demoted["visionops.rollback.production.replaced_by"] == "1"


def test_versions_whose_files_were_lost_take_no_alias(
    shared_stack, as_user, tmp_path, capsys
) -> None:
    """A moto S3 keeps nothing across a restart, and the registry still lists the version,
    READY: neither `alias set` nor `promote` may point an alias at it. (The loss is made by
    deleting the version's objects: a restart of the shared S3 would take other tests' too.)"""
    as_user(shared_stack, *shared_stack.admin_auth)
    client = mlflow.MlflowClient(tracking_uri=shared_stack.url, registry_uri=shared_stack.url)
    model = f"lost-model-{uuid.uuid4().hex[:8]}"
    run = client.create_run(client.create_experiment(model))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text("flavors: {}\n")
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.log_metric(run.info.run_id, names.VAL_ACCURACY, 0.9)
    client.create_registered_model(model)
    client.create_model_version(model, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    base = ["--model", model, "--version", "1"]
    assert main(["alias", "set", *base, "--alias", "candidate"]) == 0

    s3 = shared_stack.s3_client()
    listed = s3.list_objects_v2(Bucket=shared_stack.bucket)["Contents"]
    lost = [{"Key": o["Key"]} for o in listed if f"/{run.info.run_id}/" in o["Key"]]
    assert lost
    s3.delete_objects(Bucket=shared_stack.bucket, Delete={"Objects": lost})
    capsys.readouterr()

    location = client.get_model_version_download_uri(model, "1")
    refusal = (
        f"error: version 1 of {model!r} has no model files: no MLmodel at {location} in the "
        f"artifact store of {shared_stack.url} (lost, e.g. with a local S3 that restarted, or "
        "never uploaded); register the model again\n"
    )
    for argv in (
        ["alias", "set", *base, "--alias", "staging"],
        ["promote", *base, "--alias", "production", "--latency-budget-ms", "10000"],
    ):
        assert main(argv) == 2
        assert capsys.readouterr().err == refusal
    assert client.get_registered_model(model).aliases == {"candidate": "1"}
