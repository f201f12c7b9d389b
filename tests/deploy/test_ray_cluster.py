"""deploy/helm/ray-cluster: helm lint and helm template, the RayCluster and RayJob against the
fields KubeRay v1 documents, the other documents against the Kubernetes schemas, and checkov.

KubeRay's CRDs are not in the Kubernetes schemas and checkov has no checks for them, so their pod
templates (head, worker groups, sweep submitter) are also checked as the Pods KubeRay makes of
them: kubernetes-validate then checks every pod field strictly, and checkov runs its pod checks
(skips are annotations of the templates, each with its reason).

    .venv/bin/pytest tests/deploy/test_ray_cluster.py
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_tools import DEPLOY, KUBERNETES_VERSION, helm_template, run_tool

CHART = DEPLOY / "helm" / "ray-cluster"
PRODUCTION = CHART / "values-production.yaml"
#: What the --set flags of docs/deploy.md add in production (Terraform's outputs), which
#: values-production.yaml leaves empty.
TERRAFORM_OUTPUTS = Path(__file__).parent / "terraform-outputs" / "ray-cluster.yaml"
KUBERAY_KINDS = {"RayCluster", "RayJob"}
#: Taken from KubeRay v1 (ray-operator/controllers/ray/utils): the longest RayJob name it takes,
#: the selector key that names the RayCluster, the deletion policies a clusterSelector allows.
MAX_RAYJOB_NAME = 47
CLUSTER_SELECTOR_KEY = "ray.io/cluster"
SELECTOR_DELETION_POLICIES = {"DeleteSelf", "DeleteNone"}
#: The sweep of the RayJob renders: a TTL and extra arguments, so both paths render.
JOB_VALUES = {
    "rayJob": {
        "enabled": True,
        "name": "sweep-test",
        "ttlSecondsAfterFinished": 86400,
        "extraArgs": ["--num-samples", "32", "--data-dir", "/mnt/shared/data"],
    }
}
VARIANTS = ("default", "production", "production-job")


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """The chart's documents with the default values, the production values, and the production
    values with the sweep's RayJob; each rendered once."""
    job_values = tmp_path_factory.mktemp("ray-values") / "job.yaml"
    job_values.write_text(yaml.safe_dump(JOB_VALUES))
    return {
        "default": helm_template(CHART),
        "production": helm_template(CHART, PRODUCTION, TERRAFORM_OUTPUTS),
        "production-job": helm_template(CHART, PRODUCTION, TERRAFORM_OUTPUTS, job_values),
    }


def one(docs: list[dict], kind: str) -> dict:
    matches = [doc for doc in docs if doc["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def pod_templates(doc: dict) -> dict[str, dict]:
    """The pod templates of a RayCluster (head and each worker group) or a RayJob (submitter)."""
    if doc["kind"] == "RayCluster":
        spec = doc["spec"]
        templates = {"head": spec["headGroupSpec"]["template"]}
        templates.update({g["groupName"]: g["template"] for g in spec["workerGroupSpecs"]})
        return templates
    if doc["kind"] == "RayJob":
        return {"submitter": doc["spec"]["submitterPodTemplate"]}
    return {}


def as_pods(docs: list[dict]) -> list[dict]:
    """The documents with each KubeRay resource replaced by the Pods of its templates."""
    out = []
    for doc in docs:
        if doc["kind"] not in KUBERAY_KINDS:
            out.append(doc)
            continue
        for name, template in pod_templates(doc).items():
            meta = template.get("metadata", {})
            pod_meta = {
                "name": f"{doc['metadata']['name']}-{name}",
                "namespace": doc["metadata"]["namespace"],
                "labels": meta.get("labels", {}),
                "annotations": meta.get("annotations", {}),
            }
            out.append(
                {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template["spec"]}
            )
    return out


def env_of(container: dict) -> dict[str, Any]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def values(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# --- helm -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values_files", [(), (PRODUCTION, TERRAFORM_OUTPUTS)], ids=["default", "production"]
)
def test_helm_lint_strict(values_files: tuple[Path, ...]) -> None:
    args = ["lint", "--strict", str(CHART)]
    for path in values_files:
        args += ["--values", str(path)]
    result = run_tool("helm", *args)
    assert result.returncode == 0, result.output
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rayJob.extraArgs[0]=$(id)", "does not match pattern"),
        ("rayJob.preset=huge", "rayJob/preset"),
        ("cpuWorkers.replicas=9", "outside [minReplicas 0, maxReplicas 4]"),
        ("rayJob.enabled=true,rayJob.name=a-sweep-name-that-makes-the-rayjob-too-long", "47"),
    ],
)
def test_chart_refuses_bad_values(override: str, message: str) -> None:
    result = run_tool("helm", "template", "visionops", str(CHART), "--set", override)
    assert result.returncode != 0, result.stdout
    assert message in result.stderr


def test_production_values_alone_fail_on_each_missing_terraform_value() -> None:
    """values-production.yaml ships no placeholder IDs: without Terraform's --set the chart's
    `required` stops the render, as an empty --set does."""
    shipped = values(PRODUCTION)
    assert shipped["serviceAccount"]["roleArn"] == ""
    assert shipped["sharedStorage"]["storageClass"]["efsFileSystemId"] == ""
    empty = "sharedStorage.storageClass.efsFileSystemId="
    for args in (["-f", str(PRODUCTION)], ["-f", str(PRODUCTION), "--set", empty]):
        result = run_tool("helm", "template", "visionops", str(CHART), *args)
        assert result.returncode != 0, result.stdout
        assert "sharedStorage.storageClass.efsFileSystemId is required" in result.stderr
    file_system = "sharedStorage.storageClass.efsFileSystemId=fs-0a1b2c3d4e5f60718"
    result = run_tool(
        "helm", "template", "visionops", str(CHART), "-f", str(PRODUCTION), "--set", file_system
    )
    assert result.returncode != 0, result.stdout
    assert "serviceAccount.roleArn: the IRSA role is required" in result.stderr


def test_sweep_presets_are_the_cli_presets() -> None:
    from visionops.tuning.presets import PRESETS

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["rayJob"]["properties"]["preset"]["enum"] == PRESETS.names()


# --- RayCluster ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_raycluster_fields(renders: dict[str, list[dict]], variant: str) -> None:
    cluster = one(renders[variant], "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["upscalingMode"] in {"Default", "Aggressive", "Conservative"}
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    head_params = spec["headGroupSpec"]["rayStartParams"]
    # No trial on the head: the work goes to the worker groups.
    assert head_params["dashboard-host"] == "0.0.0.0" and head_params["num-cpus"] == "0"

    groups = spec["workerGroupSpecs"]
    names = [group["groupName"] for group in groups]
    assert len(names) == len(set(names)) >= 2, names
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group
        params = [spec["headGroupSpec"]["rayStartParams"], group["rayStartParams"]]
        assert all(isinstance(v, str) for p in params for v in p.values()), "KubeRay wants strings"


def test_ray_version_is_the_images(renders: dict[str, list[dict]]) -> None:
    """train.Dockerfile installs ray[default] at the version of requirements.lock."""
    assert '"ray[default]"' in (DEPLOY / "docker" / "train.Dockerfile").read_text()
    lock = (DEPLOY.parent / "requirements.lock").read_text()
    pinned = re.search(r"^ray==([0-9.]+)", lock, re.MULTILINE)
    assert pinned, "requirements.lock pins no ray"
    for variant, docs in renders.items():
        assert one(docs, "RayCluster")["spec"]["rayVersion"] == pinned.group(1), variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_gpu_group_scales_from_zero_on_spot(renders: dict[str, list[dict]], variant: str) -> None:
    cluster = one(renders[variant], "RayCluster")
    gpu_groups = [
        group
        for group in cluster["spec"]["workerGroupSpecs"]
        if "nvidia.com/gpu" in group["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    assert len(gpu_groups) == 1
    group = gpu_groups[0]
    assert (group["minReplicas"], group["maxReplicas"]) == (0, 5)
    pod = group["template"]["spec"]
    assert pod["nodeSelector"]["eks.amazonaws.com/capacityType"] == "SPOT"
    assert pod["nodeSelector"]["visionops.io/gpu"] == "true"
    assert any(
        t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" and t["operator"] == "Exists"
        for t in pod["tolerations"]
    ), pod["tolerations"]
    assert int(pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert pod["containers"][0]["image"].endswith("-cuda")
    cpu_pods = [
        g["template"]["spec"] for g in cluster["spec"]["workerGroupSpecs"] if g is not group
    ] + [cluster["spec"]["headGroupSpec"]["template"]["spec"]]
    assert not any("tolerations" in p for p in cpu_pods), "only the GPU group tolerates the taint"


def test_gpu_group_selects_the_terraform_gpu_nodes() -> None:
    main_tf = DEPLOY / "terraform" / "aws-eks" / "main.tf"
    if not main_tf.exists():
        pytest.skip("deploy/terraform/aws-eks/main.tf is not there")
    text = main_tf.read_text()
    gpu = values(PRODUCTION)["gpuWorkers"]
    for key, value in gpu["nodeSelector"].items():
        if key.startswith("eks.amazonaws.com/"):  # EKS sets its own labels on every node
            continue
        assert re.search(rf'"{re.escape(key)}"\s*=\s*"{re.escape(value)}"', text), key
    for toleration in gpu["tolerations"]:
        assert re.search(rf'key\s*=\s*"{re.escape(toleration["key"])}"', text), toleration


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_has_image_and_resources(
    renders: dict[str, list[dict]], variant: str
) -> None:
    docs = [doc for doc in renders[variant] if doc["kind"] in KUBERAY_KINDS]
    containers = [
        (f"{doc['kind']}/{name}/{c['name']}", c)
        for doc in docs
        for name, template in pod_templates(doc).items()
        for c in template["spec"]["containers"]
    ]
    cluster = one(docs, "RayCluster")
    containers.append(("autoscaler", cluster["spec"]["autoscalerOptions"]))
    for where, container in containers:
        if where != "autoscaler":
            assert container["image"].startswith("visionops/train"), where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (where, kind)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pods_are_restricted(renders: dict[str, list[dict]], variant: str) -> None:
    """The restricted Pod Security Standard, uid 10001 (the images' user), and a memory-backed
    /dev/shm for Ray's object store in every Ray container."""
    for doc in (d for d in renders[variant] if d["kind"] in KUBERAY_KINDS):
        for name, template in pod_templates(doc).items():
            pod = template["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert pod["securityContext"]["runAsUser"] == 10001, name
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
            volumes = {v["name"]: v for v in pod["volumes"]}
            for container in pod["containers"]:
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, name
                assert context["capabilities"]["drop"] == ["ALL"], name
                assert context.get("privileged") is not True, name
                if doc["kind"] == "RayCluster":
                    shm = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
                    assert shm and volumes[shm[0]["name"]]["emptyDir"]["medium"] == "Memory", name


@pytest.mark.parametrize("variant", VARIANTS)
def test_credentials_come_from_the_existing_secret(
    renders: dict[str, list[dict]], variant: str
) -> None:
    cluster = one(renders[variant], "RayCluster")
    for name, template in pod_templates(cluster).items():
        container = template["spec"]["containers"][0]
        env = env_of(container)
        assert env["MLFLOW_TRACKING_URI"].startswith(("http://", "https://")), name
        assert container["envFrom"] == [{"secretRef": {"name": "visionops-tracking"}}], name
        secret_like = [n for n in env if re.search("PASSWORD|SECRET|TOKEN|ACCESS_KEY", n)]
        assert not secret_like, f"{name}: literal secret variables {secret_like}"


def test_service_account_carries_the_irsa_role(renders: dict[str, list[dict]]) -> None:
    docs = renders["production"]
    account = one(docs, "ServiceAccount")
    expected = {
        **values(PRODUCTION)["serviceAccount"],
        **values(TERRAFORM_OUTPUTS)["serviceAccount"],
    }
    assert account["metadata"]["name"] == expected["name"]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == expected["roleArn"]
    cluster = one(docs, "RayCluster")
    for name, template in pod_templates(cluster).items():
        assert template["spec"]["serviceAccountName"] == expected["name"], name
    # Only the head (its autoscaler) talks to the Kubernetes API.
    automount = {
        n: t["spec"]["automountServiceAccountToken"] for n, t in pod_templates(cluster).items()
    }
    assert automount == {n: n == "head" for n in automount}
    # No role ARN in the defaults: the annotation comes only with a value.
    assert "annotations" not in one(renders["default"], "ServiceAccount")["metadata"]


def test_shared_storage_is_efs_for_the_non_root_pods(renders: dict[str, list[dict]]) -> None:
    docs = renders["production"]
    storage_class, claim = one(docs, "StorageClass"), one(docs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == storage_class["metadata"]["name"]
    assert storage_class["provisioner"] == "efs.csi.aws.com"
    parameters = storage_class["parameters"]
    assert parameters["provisioningMode"] == "efs-ap" and parameters["fileSystemId"]
    # The access point's owner is the pods' user: fsGroup does not reach into EFS.
    pod = pod_templates(one(docs, "RayCluster"))["head"]["spec"]
    assert parameters["uid"] == str(pod["securityContext"]["runAsUser"])
    assert parameters["gid"] == str(pod["securityContext"]["runAsGroup"])
    # A StorageClass is cluster-wide: only where asked for.
    assert not [doc for doc in renders["default"] if doc["kind"] == "StorageClass"]


# --- RayJob ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["default", "production"])
def test_rayjob_only_when_enabled(renders: dict[str, list[dict]], variant: str) -> None:
    assert not [doc for doc in renders[variant] if doc["kind"] == "RayJob"]


def test_rayjob_runs_a_sweep_on_the_cluster(renders: dict[str, list[dict]]) -> None:
    from visionops.cli.parser import build_parser

    docs = renders["production-job"]
    cluster, job = one(docs, "RayCluster"), one(docs, "RayJob")
    spec = job["spec"]
    assert job["apiVersion"] == "ray.io/v1"
    assert spec["entrypoint"].startswith("visionops tune --address auto ")
    argv = shlex.split(spec["entrypoint"])
    args = build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown flag
    assert (args.command, args.address, args.preset) == ("tune", "auto", "extensive")
    assert args.name == JOB_VALUES["rayJob"]["name"]
    assert args.num_samples == 32 and args.register_as == "vision-classifier"
    assert not args.tracking_uri, "the tracking URI comes from the head's environment"

    # The sweep folder is on the volume every Ray node mounts at the same path.
    for name, template in pod_templates(cluster).items():
        mounts = template["spec"]["containers"][0]["volumeMounts"]
        assert any(args.storage_path.is_relative_to(m["mountPath"]) for m in mounts), name

    assert spec["clusterSelector"] == {CLUSTER_SELECTOR_KEY: cluster["metadata"]["name"]}
    assert len(job["metadata"]["name"]) <= MAX_RAYJOB_NAME
    assert spec["submissionMode"] == "K8sJobMode"  # KubeRay refuses SidecarMode with a selector
    assert spec.get("backoffLimit", 0) == 0  # and a backoffLimit
    # The cluster is shared: it outlives the sweep, and then KubeRay takes no TTL in
    # ttlSecondsAfterFinished; the RayJob's own deletion rules hold it.
    assert spec["shutdownAfterJobFinishes"] is False
    assert spec.get("ttlSecondsAfterFinished", 0) == 0
    rules = spec["deletionStrategy"]["deletionRules"]
    assert {rule["policy"] for rule in rules} <= SELECTOR_DELETION_POLICIES
    assert {rule["condition"]["ttlSeconds"] for rule in rules} == {86400}
    assert spec["activeDeadlineSeconds"] > 0

    submitter = spec["submitterPodTemplate"]["spec"]
    assert submitter["restartPolicy"] == "Never"
    assert submitter["automountServiceAccountToken"] is False
    head_image = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert [c["image"] for c in submitter["containers"]] == [head_image]
    # KubeRay writes the `ray job submit` command when the container has none.
    assert "command" not in submitter["containers"][0]


# --- Kubernetes schemas and checkov ---------------------------------------------------------------


def test_documents_match_the_kubernetes_schemas(
    renders: dict[str, list[dict]], tmp_path: Path
) -> None:
    files = []
    for variant, docs in renders.items():
        path = tmp_path / f"{variant}.yaml"
        path.write_text(yaml.safe_dump_all(as_pods(docs), sort_keys=False))
        files.append(str(path))
    result = run_tool("kubernetes-validate", "-k", KUBERNETES_VERSION, "--strict", *files)
    assert result.returncode == 0, result.output
    validated = re.findall(r"passed for resource (\w+)/", result.output)
    for kind in ("pod", "serviceaccount", "persistentvolumeclaim", "networkpolicy", "storageclass"):
        assert kind in validated, f"no {kind} was validated:\n{result.output}"


def test_checkov_passes_the_production_manifests(
    renders: dict[str, list[dict]], tmp_path: Path
) -> None:
    manifest = tmp_path / "ray-cluster.yaml"
    pods = as_pods(renders["production-job"])
    manifest.write_text(yaml.safe_dump_all(pods, sort_keys=False))
    result = run_tool(
        "checkov", "--file", str(manifest), "--framework", "kubernetes", "--skip-download",
        "--output", "json", cwd=tmp_path,
    )  # fmt: skip
    report = json.loads(result.stdout)
    failed = [(r["check_id"], r["resource"]) for r in report["results"]["failed_checks"]]
    assert not failed, failed
    assert result.returncode == 0, result.output
    scanned = {r["resource"] for r in report["results"]["passed_checks"]}
    for pod in (doc for doc in pods if doc["kind"] == "Pod"):
        assert f"Pod.visionops.{pod['metadata']['name']}" in scanned
    for skip in report["results"]["skipped_checks"]:
        assert skip["check_result"].get("suppress_comment"), f"{skip['check_id']} has no reason"
