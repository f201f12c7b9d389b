"""The Helm charts of deploy/helm: lint, render, Kubernetes 1.33 schemas, checkov, and what the
rendered manifests promise (replicas, autoscaling, ALB, IRSA, secrets, security context).

    .venv/bin/pytest tests/deploy/test_helm_charts.py

Every chart in CHARTS is linted, rendered with its default and its production values, validated
and scanned; add a chart's folder name there to hold it to the same checks.
"""

from __future__ import annotations

import base64
import configparser
import functools
import json
import re
from pathlib import Path

import pytest
import yaml
from deploy_tools import DEPLOY, KUBERNETES_VERSION, ROOT, helm_template, run_tool

HELM = DEPLOY / "helm"
CHARTS = ["mlflow", "serve"]
#: Charts with one Deployment, an HPA and a PDB.
WORKLOAD_CHARTS = ["mlflow", "serve"]
VARIANTS = ["default", "production"]
NAMESPACE = "visionops"
#: API groups of custom resources: the Kubernetes schemas do not have them.
CRD_GROUPS = {"monitoring.coreos.com", "ray.io"}
POD_OWNERS = {"Deployment", "StatefulSet", "Job"}
UID = 10001
#: The in-cluster tracking URI every chart defaults to: the Service of the mlflow chart as
#: scripts/setup/03-install-mlflow.sh installs it, by its full DNS name (Airflow's pods run in
#: another namespace).
MLFLOW_SERVICE_URI = "http://mlflow.visionops.svc.cluster.local:5000"

#: Planted in the values of the test renders; none may appear literally in a rendered manifest
#: (the chart's own Secret holds them base64-encoded).
MARKERS = {
    "database.password": "marker-database-password-7d1c",
    "auth.adminPassword": "marker-admin-password-5e2a",
    "auth.flaskSecretKey": "marker-flask-secret-key-93b0",
    "minio.rootUser": "markerminiouser4f7e",
    "minio.rootPassword": "markerminiopassword0c6d",
}
IN_CLUSTER = {
    "database": {"createSecret": True, "password": MARKERS["database.password"]},
    "auth": {
        "adminPassword": MARKERS["auth.adminPassword"],
        "flaskSecretKey": MARKERS["auth.flaskSecretKey"],
    },
    "postgresql": {"enabled": True},
    "minio": {
        "enabled": True,
        "rootUser": MARKERS["minio.rootUser"],
        "rootPassword": MARKERS["minio.rootPassword"],
    },
}


#: Per chart, the values its --set flags give on top of values-production.yaml in production
#: (Terraform's outputs), which the chart's file leaves empty.
TERRAFORM_OUTPUTS = Path(__file__).parent / "terraform-outputs"


def values_files(chart: str, variant: str) -> tuple[Path, ...]:
    if variant != "production":
        return ()
    outputs = TERRAFORM_OUTPUTS / f"{chart}.yaml"
    return (HELM / chart / "values-production.yaml", *([outputs] if outputs.exists() else []))


def _merged(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        both_maps = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if both_maps else value
    return merged


def production_values(chart: str) -> dict:
    """The production values as helm sees them: the chart's file, then the --set values."""
    merged: dict = {}
    for path in values_files(chart, "production"):
        merged = _merged(merged, yaml.safe_load(path.read_text()))
    return merged


@functools.cache
def _render(chart: str, values: tuple[Path, ...]) -> tuple[dict, ...]:
    return tuple(helm_template(HELM / chart, *values))


def render(chart: str, variant: str = "default") -> list[dict]:
    """The documents of ``chart`` with the values of ``variant``, rendered once per session."""
    return list(_render(chart, values_files(chart, variant)))


@pytest.fixture(scope="module")
def values_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("values")


def write_values(folder: Path, name: str, values: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope="module")
def in_cluster(values_dir: Path) -> list[dict]:
    """mlflow with its own Secret (from the marker passwords), PostgreSQL and MinIO."""
    return list(_render("mlflow", (write_values(values_dir, "in-cluster", IN_CLUSTER),)))


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def pod_spec(doc: dict) -> dict:
    return doc["spec"]["template"]["spec"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def is_custom(doc: dict) -> bool:
    return doc["apiVersion"].split("/")[0] in CRD_GROUPS


# --- every chart ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chart", CHARTS)
def test_lint_strict(chart: str, variant: str) -> None:
    args = ["lint", "--strict", str(HELM / chart)]
    for path in values_files(chart, variant):
        args += ["--values", str(path)]
    result = run_tool("helm", *args)
    assert result.returncode == 0, result.output
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chart", CHARTS)
def test_rendered_documents_match_the_kubernetes_schemas(
    chart: str, variant: str, tmp_path: Path
) -> None:
    docs = render(chart, variant)
    assert docs, f"{chart} renders nothing with its {variant} values"
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
    # Custom resources (ServiceMonitor, RayCluster) have no schema among Kubernetes' own: here
    # they are held to the shape every object has; their fields are tested with their chart.
    custom = [d for d in docs if is_custom(d)]
    for doc in custom:
        assert doc["kind"] and doc["metadata"]["name"], doc
    core = [d for d in docs if not is_custom(d)]
    manifest = tmp_path / f"{chart}-{variant}.yaml"
    manifest.write_text(yaml.safe_dump_all(core))
    result = run_tool(
        "kubernetes-validate", "-k", KUBERNETES_VERSION, "--strict", "--no-warn", str(manifest)
    )
    assert result.returncode == 0, result.output
    validated = result.output.count("passed for resource")
    assert validated == len(core), f"{validated} of {len(core)} documents validated"


@pytest.fixture(scope="module")
def checkov_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list]]:
    """One checkov run over the production manifests of every chart, by chart."""
    folder = tmp_path_factory.mktemp("checkov")
    for chart in CHARTS:
        (folder / f"{chart}.yaml").write_text(yaml.safe_dump_all(render(chart, "production")))
    # --skip-download: no call home for guideline links (the machine may be offline).
    args = ["-d", str(folder), "--framework", "kubernetes", "--skip-download", "--output", "json"]
    result = run_tool("checkov", *args)
    assert result.returncode in (0, 1), result.output
    report = json.loads(result.stdout)["results"]
    by_chart: dict[str, dict[str, list]] = {c: {} for c in CHARTS}
    for outcome in ("passed_checks", "failed_checks", "skipped_checks"):
        for check in report[outcome]:
            chart = Path(check["file_path"]).stem
            by_chart[chart].setdefault(outcome, []).append(check)
    return by_chart


@pytest.mark.parametrize("chart", CHARTS)
def test_checkov_passes_the_production_manifests(
    chart: str, checkov_results: dict[str, dict[str, list]]
) -> None:
    results = checkov_results[chart]
    failed = [f"{c['check_id']} {c['resource']}" for c in results.get("failed_checks", [])]
    assert not failed, f"checkov failed on {chart}: {failed}"
    # It scanned the workloads: a Deployment that checkov did not parse would pass silently.
    scanned = {c["resource"].split(".")[0] for c in results.get("passed_checks", [])}
    kinds = {d["kind"] for d in render(chart, "production") if d["kind"] in POD_OWNERS}
    assert kinds <= scanned, f"checkov did not scan {kinds - scanned}"
    for skip in results.get("skipped_checks", []):
        reason = skip["check_result"].get("suppress_comment", "")
        assert len(reason) > 20 and reason != "No comment provided", skip


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chart", CHARTS)
def test_pods_run_restricted(chart: str, variant: str) -> None:
    workloads = [d for d in render(chart, variant) if d["kind"] in POD_OWNERS]
    if not workloads:
        pytest.skip(f"{chart} renders no Deployment, StatefulSet or Job")
    for doc in workloads:
        check_restricted(doc)


def check_restricted(doc: dict) -> None:
    spec = pod_spec(doc)
    name = doc["metadata"]["name"]
    assert spec["automountServiceAccountToken"] is False, name
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == UID, name
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
    empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["runAsNonRoot"] is True and context["runAsUser"] == UID, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert "limits" in container["resources"] and "requests" in container["resources"]
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp and tmp[0]["name"] in empty_dirs, f"{name}: /tmp is not an emptyDir"


# --- the workload charts --------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("chart", WORKLOAD_CHARTS)
def test_autoscaling_owns_the_replicas(chart: str, variant: str) -> None:
    docs = render(chart, variant)
    deployment = one(docs, "Deployment")
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    # An upgrade must not reset what the HPA scaled to.
    assert "replicas" not in deployment["spec"]


@pytest.mark.parametrize("chart", WORKLOAD_CHARTS)
def test_two_replicas_without_autoscaling(chart: str, values_dir: Path) -> None:
    fixed = write_values(values_dir, f"{chart}-fixed", {"autoscaling": {"enabled": False}})
    docs = list(_render(chart, (fixed,)))
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]


@pytest.mark.parametrize("chart", WORKLOAD_CHARTS)
def test_disruption_budget_covers_the_pods(chart: str) -> None:
    docs = render(chart, "production")
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("chart", WORKLOAD_CHARTS)
def test_service_and_network_policy_reach_the_pods(chart: str) -> None:
    docs = render(chart, "production")
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    [port] = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == port["name"] == "http"
    policy = one(docs, "NetworkPolicy", deployment["metadata"]["name"])
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}]


@pytest.mark.parametrize("chart", WORKLOAD_CHARTS)
def test_service_account_carries_the_irsa_role(chart: str, values_dir: Path) -> None:
    role = f"arn:aws:iam::123456789012:role/visionops-{chart}-test"
    with_role = write_values(values_dir, f"{chart}-role", {"serviceAccount": {"roleArn": role}})
    for docs, expected in ((list(_render(chart, (with_role,))), role), (render(chart), None)):
        account = one(docs, "ServiceAccount")
        annotations = account["metadata"].get("annotations") or {}
        assert annotations.get("eks.amazonaws.com/role-arn") == expected
        assert account["automountServiceAccountToken"] is False
        deployment = one(docs, "Deployment")
        assert pod_spec(deployment)["serviceAccountName"] == account["metadata"]["name"]


# --- mlflow ---------------------------------------------------------------------------------


def mlflow_container(docs: list[dict]) -> dict:
    [container] = pod_spec(one(docs, "Deployment"))["containers"]
    return container


def test_mlflow_production_role_is_the_values_role() -> None:
    account = one(render("mlflow", "production"), "ServiceAccount")
    expected = production_values("mlflow")["serviceAccount"]["roleArn"]
    assert expected.startswith("arn:aws:iam::")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == expected


def test_mlflow_ingress_is_an_https_alb() -> None:
    docs = render("mlflow", "production")
    values = production_values("mlflow")["ingress"]
    ingress = one(docs, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert ingress["spec"]["ingressClassName"] == "alb"
    prefix = "alb.ingress.kubernetes.io/"
    assert annotations[prefix + "scheme"] == "internet-facing"
    assert annotations[prefix + "target-type"] == "ip"
    assert annotations[prefix + "certificate-arn"] == values["certificateArn"]
    assert values["certificateArn"].startswith("arn:aws:acm:")
    assert json.loads(annotations[prefix + "listen-ports"]) == [{"HTTP": 80}, {"HTTPS": 443}]
    assert annotations[prefix + "ssl-redirect"] == "443"
    assert annotations[prefix + "healthcheck-path"] == "/health"
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == values["host"]
    [path] = rule["http"]["paths"]
    service = one(docs, "Service")
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": service["spec"]["ports"][0]["name"]},
    }
    # MLflow refuses Host headers it does not know: the ingress host must be one.
    hosts = env_of(mlflow_container(docs))["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert values["host"] in hosts and f"{service['metadata']['name']}:*" in hosts
    assert not [d for d in render("mlflow") if d["kind"] == "Ingress"]


@pytest.mark.parametrize("chart", CHARTS)
def test_production_values_ship_no_placeholder_ids(chart: str) -> None:
    """A forgotten --set must fail the chart, not render a made-up account, bucket or host."""
    text = (HELM / chart / "values-production.yaml").read_text()
    placeholders = re.findall(r"123456789012|fs-0[0-9a-f]{16}|example\.com", text)
    assert not placeholders, f"{chart}/values-production.yaml ships {placeholders}"
    shipped = yaml.safe_load(text)
    for outputs in values_files(chart, "production")[1:]:
        for key, _ in _leaves(yaml.safe_load(outputs.read_text())):
            assert _leaf(shipped, key) in ("", None), f"{chart}: {key} is set, not left to --set"


def _leaves(values: dict, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        out += _leaves(value, f"{name}.") if isinstance(value, dict) else [(name, value)]
    return out


def _leaf(values: dict, key: str) -> object:
    for part in key.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


@pytest.mark.parametrize(
    "missing",
    ["serviceAccount.roleArn", "artifacts.bucket", "ingress.host", "ingress.certificateArn"],
)
def test_mlflow_production_fails_without_each_terraform_value(
    values_dir: Path, missing: str
) -> None:
    """As an empty --set does: the value from Terraform or the team is required."""
    outputs = yaml.safe_load((TERRAFORM_OUTPUTS / "mlflow.yaml").read_text())
    section, key = missing.split(".")
    del outputs[section][key]
    partial = write_values(values_dir, f"outputs-without-{section}-{key}", outputs)
    production = HELM / "mlflow" / "values-production.yaml"
    result = run_tool(
        "helm",
        "template",
        "visionops",
        str(HELM / "mlflow"),
        "-f",
        str(production),
        "-f",
        str(partial),
    )
    assert result.returncode != 0, result.stdout
    assert f"{missing}:" in result.stderr


def test_mlflow_ingress_requires_a_certificate(values_dir: Path) -> None:
    bare = write_values(values_dir, "ingress-bare", {"ingress": {"enabled": True, "host": "x.y"}})
    result = run_tool("helm", "template", "visionops", str(HELM / "mlflow"), "-f", str(bare))
    assert result.returncode != 0
    assert "ingress.certificateArn" in result.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_mlflow_secrets_come_from_the_existing_secret(variant: str) -> None:
    docs = render("mlflow", variant)
    container = mlflow_container(docs)
    env = env_of(container)
    secret = (
        (production_values("mlflow") if variant == "production" else {})
        .get("database", {})
        .get("existingSecret", "visionops-mlflow")
    )
    for name in (
        "MLFLOW_BACKEND_STORE_URI",
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "PGPASSWORD",
    ):
        assert "value" not in env[name], name
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == secret, name
    assert not [d for d in docs if d["kind"] == "Secret"]
    # No connection string on the command line (ps, the pod spec's args).
    assert not [a for a in container["command"] + container["args"] if "postgresql" in a]


def test_mlflow_command_is_the_basic_auth_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rendered args parse as `mlflow server` options, and mlflow reads the backend URI
    from the variable the chart fills from the Secret."""
    from mlflow.cli import server

    docs = render("mlflow", "production")
    container = mlflow_container(docs)
    assert container["command"] == ["mlflow", "server"]
    artifacts = production_values("mlflow")["artifacts"]
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "postgresql:///from-the-secret")
    params = server.make_context("server", list(container["args"])).params
    assert params["app_name"] == "basic-auth"
    assert params["serve_artifacts"] is True
    assert params["artifacts_destination"] == f"s3://{artifacts['bucket']}/{artifacts['prefix']}"
    assert (params["host"], params["port"]) == ("0.0.0.0", 5000)
    assert params["backend_store_uri"] == "postgresql:///from-the-secret"
    port = container["ports"][0]["containerPort"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert port == params["port"] == one(docs, "Service")["spec"]["ports"][0]["port"]


# mlflow.server's import of Starlette's WSGI middleware warns; nothing this test controls.
@pytest.mark.filterwarnings("ignore::starlette.exceptions.StarletteDeprecationWarning")
def test_mlflow_auth_config_is_read_as_rendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's own reader takes the ConfigMap's basic_auth.ini and the admin password from
    the environment variable; the file holds no password."""
    from mlflow.server.auth.config import read_auth_config

    docs = render("mlflow", "production")
    container = mlflow_container(docs)
    env = env_of(container)
    ini = one(docs, "ConfigMap")["data"]["basic_auth.ini"]
    parsed = configparser.ConfigParser()
    parsed.read_string(ini)
    assert "admin_password" not in parsed["mlflow"]
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "auth-config")
    assert config_path.parent == Path(mount["mountPath"]) and mount["readOnly"] is True
    (tmp_path / config_path.name).write_text(ini)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(tmp_path / config_path.name))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", MARKERS["auth.adminPassword"])
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    config = read_auth_config()
    assert config.admin_password == MARKERS["auth.adminPassword"]
    assert config.admin_username == "admin"
    assert config.default_permission == "READ"
    assert config.auth_cache_ttl_seconds == 30
    # No server, user or password in the URI: libpq reads them from PG* in the pod.
    assert config.database_uri == "postgresql:///mlflow_auth"
    assert env["PGHOST"]["value"] == production_values("mlflow")["database"]["host"]
    assert {"PGPORT", "PGUSER", "PGPASSWORD"} <= env.keys()


def test_mlflow_in_cluster_stores_keep_secrets_out_of_the_manifests(
    in_cluster: list[dict], tmp_path: Path
) -> None:
    text = yaml.safe_dump_all(in_cluster)
    leaked = [key for key, marker in MARKERS.items() if marker in text]
    assert not leaked, f"rendered literally: {leaked}"
    secret = one(in_cluster, "Secret")
    stored = {base64.b64decode(v).decode() for v in secret["data"].values()}
    assert set(MARKERS.values()) <= stored
    # Every reference is to that Secret, by key, and the in-cluster stores are the ones used.
    env = env_of(mlflow_container(in_cluster))
    refs = [e["valueFrom"]["secretKeyRef"] for e in env.values() if "valueFrom" in e]
    assert refs and {r["name"] for r in refs} == {secret["metadata"]["name"]}
    assert {r["key"] for r in refs} <= secret["data"].keys()
    postgres = one(in_cluster, "StatefulSet", "visionops-mlflow-postgresql")
    minio = one(in_cluster, "StatefulSet", "visionops-mlflow-minio")
    assert (
        env["PGHOST"]["value"]
        == one(in_cluster, "Service", "visionops-mlflow-postgresql")["metadata"]["name"]
    )
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://visionops-mlflow-minio:9000"
    for store in (postgres, minio):
        assert store["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
        check_restricted(store)
        # Their own passwords arrive as files.
        [container] = pod_spec(store)["containers"]
        assert all("valueFrom" not in e for e in container.get("env", []))
    check_restricted(one(in_cluster, "Job"))
    manifest = tmp_path / "in-cluster.yaml"
    manifest.write_text(text)
    result = run_tool("kubernetes-validate", "-k", KUBERNETES_VERSION, "--strict", str(manifest))
    assert result.returncode == 0, result.output


@pytest.mark.parametrize(
    "missing", ["database.password", "auth.adminPassword", "auth.flaskSecretKey"]
)
def test_mlflow_created_secret_has_no_default_password(missing: str, values_dir: Path) -> None:
    section, key = missing.split(".")
    values = {
        "database": {"createSecret": True, "host": "db.internal"},
        "auth": dict(IN_CLUSTER["auth"]),
    }
    values["database"]["password"] = MARKERS["database.password"]
    del values[section][key]
    path = write_values(values_dir, f"no-{key}", values)
    result = run_tool("helm", "template", "visionops", str(HELM / "mlflow"), "-f", str(path))
    assert result.returncode != 0
    assert missing in result.stderr


# --- serve ----------------------------------------------------------------------------------


def serve_container(docs: list[dict]) -> dict:
    [container] = pod_spec(one(docs, "Deployment"))["containers"]
    return container


@pytest.mark.parametrize("variant", VARIANTS)
def test_serve_command_is_a_valid_visionops_serve(variant: str) -> None:
    """The rendered args parse with the real `visionops serve` parser into a ServeConfig."""
    from visionops.cli.parser import build_parser
    from visionops.serving.settings import ServeConfig

    docs = render("serve", variant)
    container = serve_container(docs)
    assert container["command"] == ["visionops", "serve"]
    args = build_parser().parse_args(["serve", *container["args"]])
    config = ServeConfig(
        **{k: v for k in ServeConfig.model_fields if (v := getattr(args, k)) is not None}
    )
    values = production_values("serve") if variant == "production" else {}
    model = {"name": "vision-classifier", "alias": "production", **values.get("model", {})}
    assert config.model_uri == f"models:/{model['name']}@{model['alias']}"
    tracking = values.get("tracking", {}).get("uri", MLFLOW_SERVICE_URI)
    assert config.tracking_uri == tracking
    assert config.host == "0.0.0.0"
    port = container["ports"][0]["containerPort"]
    assert config.port == port == one(docs, "Service")["spec"]["ports"][0]["port"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}


def test_serve_model_uri_override(values_dir: Path) -> None:
    pinned = write_values(values_dir, "serve-pinned", {"model": {"uri": "models:/resnet/7"}})
    args = serve_container(list(_render("serve", (pinned,))))["args"]
    assert args[args.index("--model-uri") + 1] == "models:/resnet/7"


@pytest.mark.parametrize("variant", VARIANTS)
def test_serve_tracking_account_comes_from_the_secret(variant: str) -> None:
    env = env_of(serve_container(render("serve", variant)))
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "visionops-tracking", "key": name}


def test_serve_s3_keys_come_from_the_named_secret(values_dir: Path) -> None:
    keyed = write_values(values_dir, "serve-s3", {"s3": {"existingSecret": "serve-s3-keys"}})
    container = serve_container(list(_render("serve", (keyed,))))
    assert container["envFrom"] == [{"secretRef": {"name": "serve-s3-keys"}}]
    assert "envFrom" not in serve_container(render("serve"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_serve_service_monitor_only_when_enabled(variant: str) -> None:
    docs = render("serve", variant)
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    enabled = (
        (production_values("serve") if variant == "production" else {})
        .get("serviceMonitor", {})
        .get("enabled", False)
    )
    assert len(monitors) == int(enabled)
    if not enabled:
        return
    [monitor] = monitors
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    [endpoint] = monitor["spec"]["endpoints"]
    service = one(docs, "Service")
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


# --- the tracking URI of the other charts ---------------------------------------------------


def test_default_tracking_uris_name_the_mlflow_service_the_setup_installs() -> None:
    """serve, ray-cluster and the Airflow values reach MLflow at the Service that the release of
    03-install-mlflow.sh (MLFLOW_RELEASE in scripts/lib/common.sh) gets, and the server accepts
    that Host header."""
    common = (ROOT / "scripts" / "lib" / "common.sh").read_text()
    release = re.search(r"MLFLOW_RELEASE=\$\{MLFLOW_RELEASE:-([a-z0-9-]+)\}", common).group(1)
    docs = helm_template(HELM / "mlflow", *values_files("mlflow", "production"), release=release)
    service = one(docs, "Service")
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert f"http://{host}:{service['spec']['ports'][0]['port']}" == MLFLOW_SERVICE_URI
    (server,) = pod_spec(one(docs, "Deployment"))["containers"]
    allowed = env_of(server)["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert f"{host}:*" in allowed, allowed

    uris = {}
    for chart in ("serve", "ray-cluster"):
        for name in ("values.yaml", "values-production.yaml"):
            values = yaml.safe_load((HELM / chart / name).read_text())
            uris[f"{chart}/{name}"] = values["tracking"]["uri"]
    airflow = yaml.safe_load((HELM / "airflow" / "values.yaml").read_text())
    env = {e["name"]: e.get("value") for e in airflow["env"]}
    uris["airflow/values.yaml"] = env["AIRFLOW_VAR_VISIONOPS_TRACKING_URI"]
    assert uris == dict.fromkeys(uris, MLFLOW_SERVICE_URI)
