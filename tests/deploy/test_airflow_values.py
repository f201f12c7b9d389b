"""deploy/helm/airflow: the values for the official Apache Airflow chart, and the Role that lets the
task pods start the visionops pods.

The chart is not in the repository and cannot be fetched offline, so nothing is rendered: the
values are checked against the chart's top-level keys (a copy below) and against what the DAGs
read (dags/visionops_dags/settings.py); rbac.yaml goes through kubernetes-validate and checkov.

    .venv/bin/pytest tests/deploy/test_airflow_values.py
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import yaml
from deploy_tools import DEPLOY, KUBERNETES_VERSION, ROOT, run_tool

FOLDER = DEPLOY / "helm" / "airflow"
VALUES = FOLDER / "values.yaml"
RBAC = FOLDER / "rbac.yaml"
#: The chart version README.md installs; CHART_KEYS comes from it.
CHART_VERSION = "1.22.0"
#: The top-level `properties` of values.schema.json in the apache-airflow/airflow 1.22.0 chart
#: package (https://airflow.apache.org, airflow-1.22.0.tgz). Helm refuses values that break that
#: schema; this copy catches a misspelt or an Airflow 2-only section before an install does.
# fmt: off
CHART_KEYS = frozenset([
    "affinity", "airflowConfigAnnotations", "airflowHome", "airflowLocalSettings",
    "airflowPodAnnotations", "airflowVersion", "allowJobLaunching", "allowPodLaunching",
    "apiSecretAnnotations", "apiSecretKey", "apiSecretKeySecretName", "apiServer", "cleanup",
    "config", "containerLifecycleHooks", "createUserJob", "dagProcessor", "dags", "data",
    "databaseCleanup", "defaultAirflowDigest", "defaultAirflowRepository", "defaultAirflowTag",
    "elasticsearch", "enableBuiltInSecretEnvVars", "enableServiceLinks", "env", "executor",
    "extraConfigMaps", "extraEnv", "extraEnvFrom", "extraSecrets", "fernetKey",
    "fernetKeySecretAnnotations", "fernetKeySecretName", "flower", "fullnameOverride", "gid",
    "imagePullSecrets", "images", "ingress", "jwtSecret", "jwtSecretAnnotations",
    "jwtSecretName", "kerberos", "labels", "limits", "logs", "migrateDatabaseJob",
    "multiNamespaceMode", "nameOverride", "networkPolicies", "nodeSelector", "opensearch",
    "otelCollector", "pgbouncer", "podTemplate", "ports", "postgresql", "priorityClasses",
    "quotas", "rbac", "redis", "registry", "revisionHistoryLimit", "scheduler", "schedulerName",
    "secret", "securityContext", "securityContexts", "statsd", "tolerations",
    "topologySpreadConstraints", "triggerer", "uid", "useStandardNaming", "volumeMounts",
    "volumes", "webserver", "webserverSecretAnnotations", "webserverSecretKey",
    "webserverSecretKeySecretName", "workers",
])
# fmt: on
#: The chart's values that hold a secret itself; each has a *SecretName twin used instead.
SECRET_VALUES = (
    ("fernetKey",),
    ("apiSecretKey",),
    ("jwtSecret",),
    ("webserverSecretKey",),
    ("data", "metadataConnection"),
    ("data", "resultBackendConnection"),
    ("data", "brokerUrl"),
    ("dags", "gitSync", "sshKey"),
)
#: Keys whose value would be a secret itself (a Secret's key name, `secretKey`, is not one).
SECRET_KEY = re.compile(
    r"^(pass|.*password|.*token|sshkey|fernetkey|apisecretkey|webserversecretkey|jwtsecret)$", re.I
)
#: The settings a DAG reads in cluster mode (the local-mode paths are not set on a cluster).
CLUSTER_SETTINGS = ("MODE", "IMAGE", "NAMESPACE", "TRACKING_URI", "ALERT_WEBHOOK_URL")
AIRFLOW_NAMESPACE = "airflow"


@pytest.fixture(scope="module")
def values() -> dict:
    loaded = yaml.safe_load(VALUES.read_text())
    assert isinstance(loaded, dict) and loaded, "values.yaml is not a mapping"
    return loaded


@pytest.fixture(scope="module")
def settings() -> ModuleType:
    """dags/visionops_dags/settings.py, which imports nothing from Airflow at module level."""
    path = ROOT / "dags" / "visionops_dags" / "settings.py"
    spec = importlib.util.spec_from_file_location("visionops_dags_settings", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.fixture(scope="module")
def rbac() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(RBAC.read_text()) if doc]


def leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, (*path, str(index)))
    else:
        yield path, node


def dig(values: dict, path: tuple[str, ...]) -> Any:
    node: Any = values
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def test_top_level_keys_are_the_charts(values: dict) -> None:
    assert not set(values) - CHART_KEYS, sorted(set(values) - CHART_KEYS)


def test_the_tasks_run_as_pods(values: dict) -> None:
    assert values["executor"] == "KubernetesExecutor"
    assert values["rbac"]["create"] is True and values["allowPodLaunching"] is True
    # The visionops namespace is granted by rbac.yaml, not by a ClusterRole over all of them.
    assert values["multiNamespaceMode"] is False


def test_dags_come_from_git_sync(values: dict) -> None:
    dags = values["dags"]
    git = dags["gitSync"]
    assert git["enabled"] is True
    assert git["repo"].startswith(("https://", "git@")) and git["branch"]
    assert git["subPath"] == "dags"
    assert not dags.get("persistence", {}).get("enabled"), "git-sync or a DAG volume, not both"
    # The synced folder is the one that holds the DAGs and their package.
    folder = ROOT / git["subPath"]
    assert sorted(p.name for p in folder.glob("*.py")), f"no DAG file in {folder}"
    assert (folder / "visionops_dags" / "__init__.py").exists()


def test_the_dags_settings_are_set(values: dict, settings: ModuleType) -> None:
    env = {item["name"]: item["value"] for item in values["env"]}
    from_secrets = {item["envName"]: item for item in values["secret"]}
    for name in CLUSTER_SETTINGS:
        variable = f"AIRFLOW_VAR_{getattr(settings, name).key.upper()}"
        assert (variable in env) != (variable in from_secrets), f"{variable}: set it once"
    assert env["AIRFLOW_VAR_VISIONOPS_MODE"] == settings.CLUSTER
    project = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert project and env["AIRFLOW_VAR_VISIONOPS_IMAGE"] == f"visionops/train:{project.group(1)}"
    assert env["AIRFLOW_VAR_VISIONOPS_TRACKING_URI"].startswith(("http://", "https://"))
    # Whoever holds the webhook URL can post to the channel: it comes from a Secret.
    webhook = from_secrets[f"AIRFLOW_VAR_{settings.ALERT_WEBHOOK_URL.key.upper()}"]
    assert webhook["secretName"] and webhook["secretKey"]
    # KubernetesPodOperator's connection is the cluster the tasks run in.
    connection = json.loads(env["AIRFLOW_CONN_KUBERNETES_DEFAULT"])
    assert connection == {"conn_type": "kubernetes", "extra": {"in_cluster": True}}


def test_the_airflow_version_is_the_tested_one(values: dict) -> None:
    tested = re.search(
        r"^apache-airflow==(\S+)$", (ROOT / "constraints-airflow.txt").read_text(), re.M
    )
    assert tested, "constraints-airflow.txt pins no apache-airflow"
    assert values["airflowVersion"] == values["defaultAirflowTag"] == tested.group(1)


def test_secrets_come_from_existing_secrets(values: dict) -> None:
    for path in (
        ("fernetKeySecretName",),
        ("apiSecretKeySecretName",),
        ("jwtSecretName",),
        ("data", "metadataSecretName"),
    ):
        assert dig(values, path), f"{'.'.join(path)} names no existing Secret"
    for path in SECRET_VALUES:
        assert dig(values, path) in (None, ""), f"{'.'.join(path)} holds a secret"
    # Their defaults would bring literal passwords: postgres/postgres and admin/admin.
    assert values["postgresql"]["enabled"] is False
    assert values["createUserJob"]["enabled"] is False
    for path, leaf in leaves(values):
        if isinstance(leaf, str) and leaf:
            assert not SECRET_KEY.search(path[-1]), f"{'.'.join(path)} holds a literal secret"
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", leaf), f"{'.'.join(path)}: a login"
            assert "hooks.slack.com" not in leaf, f"{'.'.join(path)}: a webhook URL"


def test_rbac_lets_the_task_pods_start_visionops_pods(
    values: dict, settings: ModuleType, rbac: list[dict]
) -> None:
    role = next(doc for doc in rbac if doc["kind"] == "Role")
    binding = next(doc for doc in rbac if doc["kind"] == "RoleBinding")
    namespace = {item["name"]: item["value"] for item in values["env"]}[
        f"AIRFLOW_VAR_{settings.NAMESPACE.key.upper()}"
    ]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == namespace
    verbs = {res: set(rule["verbs"]) for rule in role["rules"] for res in rule["resources"]}
    assert {"create", "get", "watch", "delete"} <= verbs["pods"]
    assert "get" in verbs["pods/log"] and "create" in verbs["pods/exec"]
    assert not any("*" in rule["verbs"] or "*" in rule["resources"] for rule in role["rules"])
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    account = values["workers"]["kubernetes"]["serviceAccount"]
    assert account["create"] is True
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["name"], "namespace": AIRFLOW_NAMESPACE}
    ]


def test_rbac_validates_and_passes_checkov(tmp_path) -> None:
    result = run_tool("kubernetes-validate", "-k", KUBERNETES_VERSION, "--strict", str(RBAC))
    assert result.returncode == 0, result.output
    assert result.output.count("passed for resource") == 2, result.output
    result = run_tool(
        "checkov", "--file", str(RBAC), "--framework", "kubernetes", "--skip-download",
        "--output", "json", cwd=tmp_path,
    )  # fmt: skip
    report = json.loads(result.stdout)
    assert report["results"]["passed_checks"], "checkov checked nothing"
    assert not report["results"]["failed_checks"], report["results"]["failed_checks"]
    assert result.returncode == 0, result.output


def test_readme_installs_the_pinned_chart() -> None:
    readme = (FOLDER / "README.md").read_text()
    command = re.search(r"helm upgrade --install airflow apache-airflow/airflow[^`]*", readme)
    assert command, "README.md has no helm install of apache-airflow/airflow"
    assert f"--version {CHART_VERSION}" in command.group(0)
    assert f"--namespace {AIRFLOW_NAMESPACE}" in command.group(0)
    assert "-f deploy/helm/airflow/values.yaml" in command.group(0)
    assert "kubectl apply -f deploy/helm/airflow/rbac.yaml" in readme
