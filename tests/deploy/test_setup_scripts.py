"""The EKS setup scripts (scripts/setup/0[1-6]-*.sh) and scripts/ops/scale-mlflow.sh, offline.

``aws``, ``terraform``, ``kubectl``, ``helm`` and ``curl`` are recorders on PATH: small programs
that log their arguments (and, where a rule says so, their stdin) and answer the reads the
scripts parse with canned output. Where a command needs no cluster the recorder hands it to the
real binary of .tools/bin (``helm template``, ``kubectl create ... --dry-run=client``), so the
flags and the chart values are checked by the tools themselves.

A dry run prints every command, ``+ `` and the command shell-quoted, and runs only
``terraform output -json`` (and, in 03, ``helm template``): the tests assert both lists.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_tools import DEPLOY, KUBERNETES_VERSION, ROOT, run_tool, tool_path
from terraform_hcl import Stack, parse

SETUP = ROOT / "scripts" / "setup"
SCALE = ROOT / "scripts" / "ops" / "scale-mlflow.sh"
#: The cluster path's scripts; a new NN-*.sh in scripts/setup is tested by default.
SCRIPTS = [*sorted(SETUP.glob("[0-9][0-9]-*.sh")), SCALE]
CHART = DEPLOY / "helm" / "mlflow"
TERRAFORM = DEPLOY / "terraform" / "aws-eks"
VISIONOPS = Path(sys.executable).parent / "visionops"

ADMIN_PASSWORD = "admin-pass-Zq81-never-printed"
DB_PASSWORD = "db-pass-Wx37-never-printed"
HOST = "mlflow.test.example"
CERTIFICATE = "arn:aws:acm:eu-west-1:123456789012:certificate/0f4c5d6e-0000-4000-8000-000000000001"
OUTPUTS = {
    "region": "eu-west-1",
    "cluster_name": "vo-test",
    "rds_address": "vo-test-mlflow.c1x2y3.eu-west-1.rds.amazonaws.com",
    "rds_endpoint": "vo-test-mlflow.c1x2y3.eu-west-1.rds.amazonaws.com:5432",
    "db_name": "mlflow",
    "db_master_username": "visionops_admin",
    "db_master_secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!db-1-AbCd",
    "artifact_bucket_name": "vo-test-artifacts-123456789012",
    "mlflow_artifacts_destination": "s3://vo-test-artifacts-123456789012/mlflow",
    "mlflow_role_arn": "arn:aws:iam::123456789012:role/vo-test-mlflow",
    "vpc_id": "vpc-0a1b2c3d4e5f60718",
    "load_balancer_controller_role_arn": (
        "arn:aws:iam::123456789012:role/vo-test-load-balancer-controller"
    ),
    "cluster_autoscaler_role_arn": "arn:aws:iam::123456789012:role/vo-test-cluster-autoscaler",
}
TERRAFORM_OUTPUT_JSON = json.dumps(
    {name: {"sensitive": False, "type": "string", "value": v} for name, v in OUTPUTS.items()}
)

RECORDER = """#!{python}
import json, os, sys
from pathlib import Path

tool, args = Path(sys.argv[0]).name, sys.argv[1:]
rules = json.loads(Path(os.environ["RECORDER_RULES"]).read_text()).get(tool, [])
# The first rule whose words all appear among the arguments.
rule = next((r for r in rules if all(word in args for word in r["when"])), {{}})
entry = {{"tool": tool, "argv": args}}
if rule.get("stdin"):
    entry["stdin"] = sys.stdin.read()
with open(os.environ["RECORDER_LOG"], "a") as log:
    log.write(json.dumps(entry) + "\\n")
if "real" in rule:
    os.execv(rule["real"], [rule["real"], *args])
sys.stdout.write(rule.get("stdout", ""))
sys.exit(rule.get("exit", 0))
"""


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    calls: list[dict[str, Any]]

    @property
    def commands(self) -> list[list[str]]:
        """The commands printed (``+ `` lines), as words; a pipe or heredoc stays one entry."""
        return [shlex.split(line[2:]) for line in self.stdout.splitlines() if line.startswith("+ ")]

    def argv(self, tool: str) -> list[list[str]]:
        return [call["argv"] for call in self.calls if call["tool"] == tool]


class Recorders:
    """The fake CLIs of one test: rules per tool, and what they recorded."""

    def __init__(self, folder: Path) -> None:
        self.bin = folder / "bin"
        self.bin.mkdir()
        self.log = folder / "calls.jsonl"
        self.rules_file = folder / "rules.json"
        self.rules: dict[str, list[dict[str, Any]]] = {}
        for tool in ("aws", "terraform", "kubectl", "helm", "curl"):
            path = self.bin / tool
            path.write_text(RECORDER.format(python=sys.executable))
            path.chmod(0o755)
        self.on("terraform", "output", "-json", stdout=TERRAFORM_OUTPUT_JSON)
        # Local renders go to the real tools.
        self.on("helm", "template", real=str(tool_path("helm")))
        self.on("kubectl", "create", "--dry-run=client", real=str(tool_path("kubectl")))

    def on(self, tool: str, *when: str, **rule: Any) -> None:
        """Answer TOOL's calls that have all the words WHEN (rules added later win)."""
        self.rules.setdefault(tool, []).insert(0, {"when": list(when), **rule})

    def run(self, script: Path, *args: str, stdin: str = "", **env: str) -> Result:
        self.rules_file.write_text(json.dumps(self.rules))
        self.log.write_text("")
        completed = subprocess.run(
            [str(script), *args],
            env={
                "PATH": f"{self.bin}:/usr/bin:/bin",
                "HOME": str(self.bin.parent / "home"),
                "RECORDER_RULES": str(self.rules_file),
                "RECORDER_LOG": str(self.log),
                "VISIONOPS_PYTHON": sys.executable,
                **env,
            },
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        calls = [json.loads(line) for line in self.log.read_text().splitlines()]
        return Result(completed.returncode, completed.stdout, completed.stderr, calls)


@pytest.fixture
def recorders(tmp_path: Path) -> Recorders:
    return Recorders(tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, str]:
    """The scripts' settings for this test: its own Terraform folder and secrets folder."""
    tf_dir = tmp_path / "terraform"
    tf_dir.mkdir()
    (tf_dir / "main.tf").write_text("# stand-in\n")
    return {
        "TF_DIR": str(tf_dir),
        "CLUSTER_SECRETS_DIR": str(tmp_path / "cluster-secrets"),
        "MLFLOW_HOST": HOST,
        "MLFLOW_CERTIFICATE_ARN": CERTIFICATE,
        "AWS_REGION": "eu-west-1",
    }


def header(script: Path) -> str:
    """The help text: the comment from line 2 up to `set -euo pipefail`, without the #s."""
    lines = script.read_text().splitlines()[1:]
    text = lines[: next(i for i, line in enumerate(lines) if line.startswith("set -euo"))]
    return "".join(re.sub(r"^# ?", "", line) + "\n" for line in text)


def starts_with(command: list[str], *words: str) -> bool:
    return command[: len(words)] == list(words)


# --- every script --------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_prints_the_header(script: Path, recorders: Recorders) -> None:
    result = recorders.run(script, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout == header(script)
    assert "--dry-run" in result.stdout
    assert result.calls == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_an_unknown_argument_exits_2(script: Path, recorders: Recorders) -> None:
    result = recorders.run(script, "--dry-run", "--frobnicate")
    assert result.returncode == 2
    assert result.stderr == "error: unknown argument '--frobnicate' (see --help)\n"
    assert result.stdout == ""
    assert result.calls == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min", "5", "--max", "3"], "--min 5 is above --max 3"),
        (["--min", "0"], "--min must be at least 1"),
        (["--replicas", "two"], "--replicas takes a whole number, not 'two'"),
        (["--max"], "--max needs a number"),
    ],
)
def test_scale_refuses_bad_numbers(recorders: Recorders, args: list[str], message: str) -> None:
    result = recorders.run(SCALE, "--dry-run", *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {message}")
    assert result.calls == []


# --- dry runs: what is printed, in order, and what is called -------------------------------

SECRETSMANAGER_READ = ("aws", "secretsmanager", "get-secret-value")
#: What 02 runs after update-kubeconfig: the chart repositories, then the four add-ons.
ADDON_REPOS = {
    "eks": "https://aws.github.io/eks-charts",
    "autoscaler": "https://kubernetes.github.io/autoscaler",
    "kuberay": "https://ray-project.github.io/kuberay-helm/",
    "nvdp": "https://nvidia.github.io/k8s-device-plugin",
}
ADDONS = {  # release: (chart, namespace)
    "aws-load-balancer-controller": ("eks/aws-load-balancer-controller", "kube-system"),
    "cluster-autoscaler": ("autoscaler/cluster-autoscaler", "kube-system"),
    "kuberay-operator": ("kuberay/kuberay-operator", "kuberay-system"),
    "nvidia-device-plugin": ("nvdp/nvidia-device-plugin", "kube-system"),
}
ADDON_COMMANDS = [
    *[("helm", "repo", "add", name, url, "--force-update") for name, url in ADDON_REPOS.items()],
    *[("helm", "upgrade", "--install", release, chart) for release, (chart, _) in ADDONS.items()],
]
DRY_RUNS = {
    "01-setup-aws.sh": (
        [],
        [
            ("aws", "--version"),
            ("terraform", "version"),
            ("kubectl", "version", "--client"),
            ("helm", "version"),
            ("aws", "sts", "get-caller-identity"),
            ("aws", "ec2", "describe-availability-zones", "--region", "eu-west-1"),
            ("aws", "acm", "describe-certificate", "--region", "eu-west-1"),
        ],
        [],
    ),
    "02-terraform-apply.sh": (
        [],
        [
            ("terraform", "-chdir={TF_DIR}", "init"),
            ("terraform", "-chdir={TF_DIR}", "plan", "-input=false", "-out=visionops.tfplan"),
            ("terraform", "-chdir={TF_DIR}", "apply", "-input=false", "visionops.tfplan"),
            ("rm", "-f", "{TF_DIR}/visionops.tfplan"),
            ("terraform", "-chdir={TF_DIR}", "output", "-json"),
            ("aws", "eks", "update-kubeconfig", "--name", "vo-test", "--region", "eu-west-1"),
            *ADDON_COMMANDS,
        ],
        [("terraform", "-chdir={TF_DIR}", "output", "-json")],
    ),
    "03-install-mlflow.sh": (
        [],
        [
            ("terraform", "-chdir={TF_DIR}", "output", "-json"),
            ("(umask", "077", "&&", "head"),  # the admin password, generated
            ("(umask", "077", "&&", "head"),  # the Flask secret key, generated
            (*SECRETSMANAGER_READ, "--region", "eu-west-1", "--secret-id"),
            ("kubectl", "create", "namespace", "visionops"),
            ("kubectl", "create", "secret", "generic", "visionops-mlflow"),
            ("kubectl", "delete", "job", "mlflow-create-auth-database"),
            ("kubectl", "apply", "--server-side"),
            ("kubectl", "wait", "job/mlflow-create-auth-database"),
            ("helm", "template", "mlflow", str(CHART)),
            ("helm", "upgrade", "--install", "mlflow", str(CHART)),
        ],
        [("terraform", "-chdir={TF_DIR}", "output", "-json"), ("helm", "template", "mlflow")],
    ),
    "04-create-users.sh": (
        ["--file", "team.txt"],
        [("env", f"MLFLOW_TRACKING_URI=https://{HOST}", str(SETUP / "create-users.sh"))],
        [],
    ),
    "05-test-connection.sh": (
        [],
        [
            ("env", f"MLFLOW_TRACKING_URI=https://{HOST}", str(SETUP / "test-connection.sh")),
            ("env", f"MLFLOW_TRACKING_URI=https://{HOST}", str(VISIONOPS), "train", "--recipe"),
        ],
        [],
    ),
    "06-verify-all.sh": (
        [],
        [
            ("terraform", "-chdir={TF_DIR}", "output", "-json"),
            ("aws", "eks", "describe-cluster", "--region", "eu-west-1", "--name", "vo-test"),
            (
                "aws",
                "rds",
                "describe-db-instances",
                "--region",
                "eu-west-1",
                "--db-instance-identifier",
                "vo-test-mlflow",
            ),
            (
                "aws",
                "s3api",
                "get-bucket-versioning",
                "--region",
                "eu-west-1",
                "--bucket",
                OUTPUTS["artifact_bucket_name"],
            ),
            (
                "kubectl",
                "rollout",
                "status",
                "deployment/aws-load-balancer-controller",
                "--namespace",
                "kube-system",
            ),
            (
                "kubectl",
                "rollout",
                "status",
                "deployment/cluster-autoscaler",
                "--namespace",
                "kube-system",
            ),
            (
                "kubectl",
                "rollout",
                "status",
                "deployment/kuberay-operator",
                "--namespace",
                "kuberay-system",
            ),
            (
                "kubectl",
                "get",
                "daemonset",
                "nvidia-device-plugin",
                "--namespace",
                "kube-system",
            ),
            ("kubectl", "rollout", "status", "deployment/mlflow", "--namespace", "visionops"),
            ("helm", "status", "mlflow", "--namespace", "visionops"),
            ("kubectl", "get", "ingress", "mlflow", "--namespace", "visionops"),
            ("curl", "-fsS", "--max-time", "15", f"https://{HOST}/health"),
        ],
        [("terraform", "-chdir={TF_DIR}", "output", "-json")],
    ),
    "scale-mlflow.sh": (
        ["--min", "3", "--max", "6", "--replicas", "4"],
        [
            (
                "kubectl",
                "patch",
                "hpa/mlflow",
                "--namespace",
                "visionops",
                "--type=merge",
                "--patch",
                '{"spec": {"minReplicas": 3, "maxReplicas": 6}}',
            ),
            ("kubectl", "scale", "deployment/mlflow", "--namespace", "visionops", "--replicas=4"),
            ("kubectl", "rollout", "status", "deployment/mlflow", "--namespace", "visionops"),
            ("kubectl", "get", "deployment,hpa", "--namespace", "visionops"),
        ],
        [],
    ),
}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_dry_run_prints_every_command_and_runs_only_reads(
    script: Path, recorders: Recorders, settings: dict[str, str]
) -> None:
    assert script.name in DRY_RUNS, f"{script.name} has no expected dry run in DRY_RUNS"
    args, printed, called = DRY_RUNS[script.name]

    def filled(words: tuple[str, ...]) -> list[str]:
        return [word.replace("{TF_DIR}", settings["TF_DIR"]) for word in words]

    result = recorders.run(script, "--dry-run", *args, **settings)
    assert result.returncode == 0, result.stderr
    commands = result.commands
    assert len(commands) == len(printed), "\n".join(map(shlex.join, commands))
    for command, expected in zip(commands, printed, strict=True):
        assert starts_with(command, *filled(expected)), (shlex.join(command), expected)
    actual_calls = [[call["tool"], *call["argv"]] for call in result.calls]
    assert len(actual_calls) == len(called), actual_calls
    for call, expected in zip(actual_calls, called, strict=True):
        assert starts_with(call, *filled(expected)), (call, expected)
    # Nothing generated or written: no secrets folder, no plan file.
    assert not Path(settings["CLUSTER_SECRETS_DIR"]).exists()
    assert not (Path(settings["TF_DIR"]) / "visionops.tfplan").exists()


def test_dry_run_works_before_the_first_apply(recorders: Recorders, settings: dict) -> None:
    """No state yet: terraform has no outputs, and the commands show placeholders."""
    recorders.on("terraform", "output", "-json", stdout="{}")
    result = recorders.run(SETUP / "06-verify-all.sh", "--dry-run", **settings)
    assert result.returncode == 0, result.stderr
    describe = next(c for c in result.commands if starts_with(c, "aws", "eks"))
    assert "TERRAFORM_OUTPUT_cluster_name" in describe


# --- 02: terraform, for real with the recorders ---------------------------------------------


def test_terraform_apply_plans_applies_then_points_kubectl_at_the_cluster(
    recorders: Recorders, settings: dict[str, str]
) -> None:
    recorders.on("terraform", "plan", exit=2)  # -detailed-exitcode: changes planned
    (Path(settings["TF_DIR"]) / "visionops.tfplan").write_text("the saved plan")
    result = recorders.run(SETUP / "02-terraform-apply.sh", "--yes", **settings)
    assert result.returncode == 0, result.stderr
    chdir = f"-chdir={settings['TF_DIR']}"
    assert result.argv("terraform") == [
        [chdir, "init", "-input=false"],
        [chdir, "plan", "-input=false", "-out=visionops.tfplan", "-detailed-exitcode"],
        [chdir, "apply", "-input=false", "visionops.tfplan"],
        [chdir, "output", "-json"],
    ]
    # The cluster and region are the ones terraform reported, not the environment's defaults.
    assert result.argv("aws") == [
        [
            "eks",
            "update-kubeconfig",
            "--name",
            "vo-test",
            "--region",
            "eu-west-1",
            "--alias",
            "vo-test",
        ]
    ]
    assert [call["tool"] for call in result.calls] == ["terraform"] * 4 + ["aws"] + ["helm"] * 8
    assert not (Path(settings["TF_DIR"]) / "visionops.tfplan").exists(), (
        "the plan file may hold secrets"
    )


def test_terraform_apply_without_changes_applies_nothing(
    recorders: Recorders, settings: dict[str, str]
) -> None:
    result = recorders.run(SETUP / "02-terraform-apply.sh", **settings)
    assert result.returncode == 0, result.stderr
    assert [argv[1] for argv in result.argv("terraform")] == ["init", "plan", "output"]
    assert "no changes" in result.stdout
    assert result.argv("aws")[0][:2] == ["eks", "update-kubeconfig"]
    # The add-ons are installed anyway: a re-run repairs one that was removed.
    assert len(result.argv("helm")) == len(ADDON_COMMANDS)


def test_terraform_apply_asks_and_off_a_terminal_needs_yes(
    recorders: Recorders, settings: dict[str, str]
) -> None:
    recorders.on("terraform", "plan", exit=2)
    result = recorders.run(SETUP / "02-terraform-apply.sh", stdin="y\n", **settings)
    assert result.returncode == 1
    assert "pass --yes" in result.stderr
    assert [argv[1] for argv in result.argv("terraform")] == ["init", "plan"]
    assert result.argv("aws") == []
    assert result.argv("helm") == []


def helm_sets(command: list[str]) -> dict[str, str]:
    """The --set and --set-string values of a helm command line."""
    return dict(
        command[i + 1].split("=", 1)
        for i, word in enumerate(command)
        if word in ("--set", "--set-string")
    )


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def pinned_chart_versions() -> dict[str, str]:
    """The add-ons' chart versions, as scripts/lib/common.sh pins them (NAME_CHART_VERSION=X)."""
    text = (ROOT / "scripts" / "lib" / "common.sh").read_text()
    return dict(re.findall(r"^([A-Z_]+)_CHART_VERSION=(\S+)$", text, re.MULTILINE))


def addon_upgrades(commands: list[list[str]]) -> dict[str, list[str]]:
    """helm upgrade --install commands of the add-ons, by release."""
    return {
        c[3]: c
        for c in commands
        if starts_with(c, "helm", "upgrade", "--install") and c[3] in ADDONS
    }


def test_terraform_apply_installs_the_add_ons_with_the_terraform_outputs(
    recorders: Recorders, settings: dict[str, str]
) -> None:
    result = recorders.run(SETUP / "02-terraform-apply.sh", "--dry-run", **settings)
    assert result.returncode == 0, result.stderr
    commands = result.commands
    kubeconfig = next(i for i, c in enumerate(commands) if starts_with(c, "aws", "eks"))
    # The repositories first, then the charts, all after kubectl points at the cluster.
    assert [tuple(c[:6]) for c in commands[kubeconfig + 1 : kubeconfig + 5]] == ADDON_COMMANDS[:4]
    upgrades = addon_upgrades(commands)
    assert list(upgrades) == list(ADDONS)
    assert commands.index(upgrades["aws-load-balancer-controller"]) == kubeconfig + 5

    versions = pinned_chart_versions()
    assert len(versions) == len(ADDONS), versions
    for release, command in upgrades.items():
        chart, namespace = ADDONS[release]
        assert command[4] == chart
        assert option(command, "--namespace") == namespace
        # An exact release from common.sh, never a range or the repository's latest.
        assert option(command, "--version") in versions.values(), command
        assert re.fullmatch(r"\d+\.\d+\.\d+", option(command, "--version")), command
        # Waited for: 03's Ingress needs the controller's webhook up.
        assert "--wait" in command

    role = "eks\\.amazonaws\\.com/role-arn"
    assert helm_sets(upgrades["aws-load-balancer-controller"]) == {
        "clusterName": "vo-test",
        "region": "eu-west-1",
        "vpcId": OUTPUTS["vpc_id"],
        "serviceAccount.name": "aws-load-balancer-controller",
        f"serviceAccount.annotations.{role}": OUTPUTS["load_balancer_controller_role_arn"],
    }
    assert helm_sets(upgrades["cluster-autoscaler"]) == {
        "autoDiscovery.clusterName": "vo-test",
        "awsRegion": "eu-west-1",
        "fullnameOverride": "cluster-autoscaler",
        "rbac.serviceAccount.name": "cluster-autoscaler",
        f"rbac.serviceAccount.annotations.{role}": OUTPUTS["cluster_autoscaler_role_arn"],
    }
    assert "--create-namespace" in upgrades["kuberay-operator"]
    assert helm_sets(upgrades["nvidia-device-plugin"]) == {
        "nodeSelector.visionops\\.io/gpu": "true",
        "tolerations[0].key": "nvidia.com/gpu",
        "tolerations[0].operator": "Exists",
        "tolerations[0].effect": "NoSchedule",
        "affinity": "null",
    }
    # --set-string: a nodeSelector value must stay the string "true".
    plugin = upgrades["nvidia-device-plugin"]
    assert plugin[plugin.index("nodeSelector.visionops\\.io/gpu=true") - 1] == "--set-string"


def test_terraform_apply_runs_the_add_on_commands_in_order_and_again_the_same(
    recorders: Recorders, settings: dict[str, str]
) -> None:
    """For real with the recorders: what the dry run printed is what runs, and a second run
    (the plan now without changes) runs the same add-on commands."""
    printed = recorders.run(SETUP / "02-terraform-apply.sh", "--dry-run", **settings).commands
    expected = [c[1:] for c in printed if c[0] == "helm"]
    recorders.on("terraform", "plan", exit=2)
    first = recorders.run(SETUP / "02-terraform-apply.sh", "--yes", **settings)
    assert first.returncode == 0, first.stderr
    assert first.argv("helm") == expected
    tools = [call["tool"] for call in first.calls]
    assert tools[tools.index("aws") :] == ["aws"] + ["helm"] * len(ADDON_COMMANDS)

    recorders.on("terraform", "plan", exit=0)
    again = recorders.run(SETUP / "02-terraform-apply.sh", "--yes", **settings)
    assert again.returncode == 0, again.stderr
    assert again.argv("helm") == first.argv("helm")
    assert again.argv("aws") == first.argv("aws")


def test_the_add_ons_match_the_iam_roles_and_the_gpu_nodes(
    recorders: Recorders, settings: dict[str, str]
) -> None:
    """The service accounts the charts get are the ones the IRSA roles trust, and the device
    plugin selects the GPU node group's label and tolerates its taint (main.tf, iam.tf)."""
    stack = Stack.load(parse(sorted(TERRAFORM.glob("*.tf"))))
    upgrades = addon_upgrades(
        recorders.run(SETUP / "02-terraform-apply.sh", "--dry-run", **settings).commands
    )
    for release, key, account in (
        ("aws-load-balancer-controller", "load-balancer-controller", "serviceAccount.name"),
        ("cluster-autoscaler", "cluster-autoscaler", "rbac.serviceAccount.name"),
    ):
        command = upgrades[release]
        subject = (
            f"system:serviceaccount:{option(command, '--namespace')}:{helm_sets(command)[account]}"
        )
        assert stack.locals["irsa"][key] == [subject]

    hcl = stack.hcl
    gpu = stack.resource("aws_eks_node_group", "gpu")
    (taint,) = hcl.blocks(gpu, "taint")
    values = helm_sets(upgrades["nvidia-device-plugin"])
    selector = {
        key.removeprefix("nodeSelector.").replace("\\.", "."): value
        for key, value in values.items()
        if key.startswith("nodeSelector.")
    }
    assert selector and all(hcl.attr(gpu, "labels").get(k) == v for k, v in selector.items())
    assert values["tolerations[0].key"] == hcl.attr(taint, "key")
    effects = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute"}
    assert values["tolerations[0].effect"] == effects[hcl.attr(taint, "effect")]


# --- 03: the Secret, the Job and the chart values, for real with the recorders ---------------


def install_mlflow(recorders: Recorders, settings: dict[str, str], tmp_path: Path) -> Result:
    """03 with cluster writes recorded; the Secret is rendered by the real kubectl."""
    recorders.on("kubectl", "apply", stdin=True)
    recorders.on("kubectl", "create", "--dry-run=client", real=str(tool_path("kubectl")))
    admin = tmp_path / "admin.password"
    admin.write_text(ADMIN_PASSWORD + "\n")
    result = recorders.run(
        SETUP / "03-install-mlflow.sh", **settings, VISIONOPS_ADMIN_PASSWORD_FILE=str(admin)
    )
    assert result.returncode == 0, result.stderr
    return result


def applied(result: Result) -> list[dict]:
    return [
        doc
        for call in result.calls
        if call["tool"] == "kubectl" and call["argv"][0] == "apply"
        for doc in yaml.safe_load_all(call["stdin"])
        if doc
    ]


def helm_upgrade_values(result: Result) -> list[str]:
    (upgrade,) = [argv for argv in result.argv("helm") if argv[0] == "upgrade"]
    return upgrade


def test_install_mlflow_keeps_every_password_off_command_lines_and_output(
    recorders: Recorders, settings: dict[str, str], tmp_path: Path
) -> None:
    recorders.on(
        "aws",
        *SECRETSMANAGER_READ[1:],
        stdout=json.dumps({"username": "visionops_admin", "password": DB_PASSWORD}) + "\n",
    )
    result = install_mlflow(recorders, settings, tmp_path)
    secrets = Path(settings["CLUSTER_SECRETS_DIR"])
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    flask_file = secrets / "flask-secret-key"
    assert stat.S_IMODE(flask_file.stat().st_mode) == 0o600
    flask_key = flask_file.read_text().strip()
    assert len(flask_key) >= 32
    everything_seen = result.stdout + result.stderr + json.dumps([c["argv"] for c in result.calls])
    for secret in (ADMIN_PASSWORD, DB_PASSWORD, flask_key):
        assert secret not in everything_seen

    namespace, secret, job = applied(result)
    assert (namespace["kind"], namespace["metadata"]["name"]) == ("Namespace", "visionops")
    assert (secret["kind"], secret["metadata"]["name"]) == ("Secret", "visionops-mlflow")
    assert secret["metadata"]["namespace"] == "visionops"
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    # The keys of the chart's secretKeys, each without a final line break.
    assert data == {
        "admin-password": ADMIN_PASSWORD,
        "flask-secret-key": flask_key,
        "database-password": DB_PASSWORD,
        "backend-store-uri": "postgresql:///mlflow",
    }
    assert "last-applied" not in json.dumps(secret)

    assert job["kind"] == "Job"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["PGHOST"]["value"] == OUTPUTS["rds_address"]
    assert env["PGUSER"]["value"] == OUTPUTS["db_master_username"]
    assert env["AUTH_DB"]["value"] == "mlflow_auth"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "visionops-mlflow",
        "key": "database-password",
    }
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job))
    validated = run_tool("kubernetes-validate", "-k", KUBERNETES_VERSION, "--strict", str(job_file))
    assert validated.returncode == 0, validated.output

    kubectl = [argv[:2] for argv in result.argv("kubectl") if argv[0] != "create"]
    assert kubectl == [["apply", "--server-side"]] * 2 + [
        ["delete", "job"],
        ["apply", "--server-side"],
        ["wait", "job/mlflow-create-auth-database"],
    ]


def test_install_mlflow_sets_the_chart_from_the_terraform_outputs(
    recorders: Recorders, settings: dict[str, str], tmp_path: Path
) -> None:
    db_password = tmp_path / "db.password"
    db_password.write_text(DB_PASSWORD)
    settings["VISIONOPS_DB_PASSWORD_FILE"] = str(db_password)
    first = install_mlflow(recorders, settings, tmp_path)
    # The password came from the file: Secrets Manager was not asked.
    assert first.argv("aws") == []
    upgrade = helm_upgrade_values(first)
    assert upgrade[:5] == ["upgrade", "--install", "mlflow", str(CHART), "--namespace"]
    assert upgrade[-3:] == ["--wait", "--timeout", "10m"]

    # What the chart makes of those values, rendered by the real helm.
    rendered = subprocess.run(
        [str(tool_path("helm")), "template", *upgrade[2:-3]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(rendered.stdout) if d}
    account = docs["ServiceAccount", "mlflow"]
    assert (
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        == OUTPUTS["mlflow_role_arn"]
    )
    ingress = docs["Ingress", "mlflow"]
    assert ingress["spec"]["rules"][0]["host"] == HOST
    assert (
        ingress["metadata"]["annotations"]["alb.ingress.kubernetes.io/certificate-arn"]
        == CERTIFICATE
    )
    pod = docs["Deployment", "mlflow"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["PGHOST"]["value"] == OUTPUTS["rds_address"]
    assert env["PGUSER"]["value"] == OUTPUTS["db_master_username"]
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "visionops-mlflow"
    assert OUTPUTS["mlflow_artifacts_destination"] in container["args"]
    assert pod["spec"]["serviceAccountName"] == "mlflow"
    assert "mlflow_auth" in docs["ConfigMap", "mlflow-auth"]["data"]["basic_auth.ini"]
    hmac = pod["metadata"]["annotations"]["visionops.io/credentials-hmac"]
    assert re.fullmatch(r"[0-9a-f]{64}", hmac)

    # Re-running changes nothing; a rotated database password restarts the pods.
    again = install_mlflow(recorders, settings, tmp_path)
    assert helm_upgrade_values(again) == upgrade
    db_password.write_text("rotated-" + DB_PASSWORD)
    rotated = helm_upgrade_values(install_mlflow(recorders, settings, tmp_path))
    changed = [(a, b) for a, b in zip(upgrade, rotated, strict=True) if a != b]
    assert [a.split("=")[0] for a, _ in changed] == [
        "podAnnotations.visionops\\.io/credentials-hmac"
    ]


def test_install_mlflow_refuses_a_short_admin_password(
    recorders: Recorders, settings: dict[str, str], tmp_path: Path
) -> None:
    admin = tmp_path / "short.password"
    admin.write_text("too-short\n")
    result = recorders.run(
        SETUP / "03-install-mlflow.sh", **settings, VISIONOPS_ADMIN_PASSWORD_FILE=str(admin)
    )
    assert result.returncode == 1
    assert "fewer than 12 characters" in result.stderr
    assert not [argv for argv in result.argv("kubectl") if argv[0] == "apply"]
    assert result.argv("helm") == []


# --- 01 and 06: checklists, with the recorders answering ------------------------------------


def test_setup_aws_reports_the_wrong_account(recorders: Recorders, settings: dict) -> None:
    identity = {
        "UserId": "AID1",
        "Account": "999999999999",
        "Arn": "arn:aws:iam::999999999999:user/ci",
    }
    recorders.on("aws", "sts", "get-caller-identity", stdout=json.dumps(identity))
    recorders.on(
        "aws", "describe-availability-zones", stdout="eu-west-1a\teu-west-1b\teu-west-1c\n"
    )
    recorders.on("aws", "describe-certificate", stdout="ISSUED\n")
    result = recorders.run(SETUP / "01-setup-aws.sh", **settings, AWS_ACCOUNT_ID="123456789012")
    assert result.returncode == 1
    status = {}
    for line in result.stdout.splitlines():
        if line.startswith(("OK", "FAIL")):
            status.setdefault(line.split()[1], set()).add(line.split()[0])
    assert status == {
        "tools": {"OK"},
        "identity": {"FAIL"},
        "region": {"OK"},
        "certificate": {"OK"},
        "sources": {"OK"},
    }
    assert (
        "the credentials are for account 999999999999, AWS_ACCOUNT_ID is 123456789012"
        in result.stdout
    )
    assert result.stdout.rstrip().endswith("1 check(s) failed")


@pytest.mark.parametrize("database", ["available", "modifying"])
def test_verify_all_checks_each_part(recorders: Recorders, settings: dict, database: str) -> None:
    recorders.on("aws", "describe-cluster", stdout="ACTIVE\n")
    recorders.on("aws", "describe-db-instances", stdout=f"{database}\n")
    recorders.on("aws", "get-bucket-versioning", stdout="Enabled\n")
    recorders.on("kubectl", "rollout", stdout='deployment "mlflow" successfully rolled out\n')
    recorders.on(
        "kubectl", "ingress", stdout="k8s-visionops-mlflow-0123.eu-west-1.elb.amazonaws.com"
    )
    recorders.on("helm", "status", stdout=json.dumps({"info": {"status": "deployed"}}))
    recorders.on("curl", "--max-time", stdout="OK")
    recorders.on("kubectl", "daemonset", stdout="nvidia-device-plugin")
    result = recorders.run(SETUP / "06-verify-all.sh", **settings)
    lines = [
        line.split()[:2] for line in result.stdout.splitlines() if line.startswith(("OK", "FAIL"))
    ]
    names = [
        "cluster",
        "database",
        "bucket",
        *ADDON_CHECKS,
        "rollout",
        "release",
        "ingress",
        "health",
    ]
    if database == "available":
        assert result.returncode == 0, result.stdout
        assert lines == [["OK", name] for name in names]
    else:
        assert result.returncode == 1
        assert lines == [["FAIL" if n == "database" else "OK", n] for n in names]
        assert "modifying (wanted: available)" in result.stdout
    assert result.argv("curl") == [["-fsS", "--max-time", "15", f"https://{HOST}/health"]]


ADDON_CHECKS = ["lb-ctl", "autoscaler", "kuberay", "gpu-plugin"]


def test_verify_all_fails_each_add_on_that_is_missing(recorders: Recorders, settings: dict) -> None:
    recorders.on("aws", "describe-cluster", stdout="ACTIVE\n")
    recorders.on("aws", "describe-db-instances", stdout="available\n")
    recorders.on("aws", "get-bucket-versioning", stdout="Enabled\n")
    recorders.on("kubectl", "rollout", stdout='deployment "x" successfully rolled out\n')
    recorders.on(
        "kubectl",
        "deployment/kuberay-operator",
        stdout='Error from server (NotFound): deployments.apps "kuberay-operator" not found\n',
        exit=1,
    )
    recorders.on(
        "kubectl",
        "daemonset",
        stdout='Error from server (NotFound): daemonsets.apps "nvidia-device-plugin" not found\n',
        exit=1,
    )
    result = recorders.run(SETUP / "06-verify-all.sh", **settings)
    assert result.returncode == 1
    status = {
        line.split()[1]: line.split()[0]
        for line in result.stdout.splitlines()
        if line.startswith(("OK", "FAIL"))
    }
    assert {name: status[name] for name in ADDON_CHECKS} == {
        "lb-ctl": "OK",
        "autoscaler": "OK",
        "kuberay": "FAIL",
        "gpu-plugin": "FAIL",
    }
    assert '"kuberay-operator" not found' in result.stdout


# --- the contracts with deploy/terraform/aws-eks and deploy/helm/mlflow --------------------


def test_the_scripts_read_only_outputs_terraform_declares() -> None:
    declared = set(re.findall(r'^output "([^"]+)"', (TERRAFORM / "outputs.tf").read_text(), re.M))
    used = set()
    for script in [*SCRIPTS, ROOT / "scripts" / "lib" / "common.sh"]:
        text = script.read_text()
        used |= set(re.findall(r"tf_output ([a-z_]+)", text))
        used |= set(re.findall(r"TF_OUTPUT\[([a-z_]+)\]", text))
    assert used, "no terraform output read by the scripts was found"
    assert used <= declared, f"outputs the scripts read but outputs.tf lacks: {used - declared}"


def test_the_values_03_sets_exist_in_the_chart(recorders: Recorders, settings: dict) -> None:
    result = recorders.run(SETUP / "03-install-mlflow.sh", "--dry-run", **settings)
    upgrade = next(c for c in result.commands if starts_with(c, "helm", "upgrade"))
    keys = [upgrade[i + 1].split("=")[0] for i, w in enumerate(upgrade) if w.startswith("--set")]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for key in keys:
        node: Any = values
        for part in re.split(r"(?<!\\)\.", key):
            if node == {}:  # a free-form map, such as podAnnotations
                break
            assert isinstance(node, dict) and part in node, f"{key} is not a value of {CHART}"
            node = node[part]
    assert len(keys) >= 10, keys


def test_common_sh_quotes_the_printed_commands_as_the_shell_reads_them() -> None:
    words = ["plain", "", "with space", "it's", "a\\b", '{"k": 1}', "x=$HOME", "*", "tab\there"]
    script = f'source {ROOT}/scripts/lib/common.sh; shell_quote "$@"'
    line = subprocess.run(
        ["bash", "-c", script, "bash", *words], capture_output=True, text=True, check=True
    ).stdout
    assert shlex.split(line) == words
    assert line.startswith("plain '' 'with space' ")


def test_create_users_needs_the_admin_password_from_03(
    recorders: Recorders, settings: dict
) -> None:
    result = recorders.run(SETUP / "04-create-users.sh", **settings)
    assert result.returncode == 1
    expected = Path(settings["CLUSTER_SECRETS_DIR"]) / "admin.password"
    assert result.stderr.startswith(f"error: no admin password in {expected}: run 03")
    assert result.stdout == ""
