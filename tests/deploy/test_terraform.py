"""deploy/terraform/aws-eks: the EKS stack parses, holds what it promises, and checkov passes.

    .venv/bin/pytest tests/deploy/test_terraform.py

Nothing is planned or applied: the providers cannot be downloaded here. The files are parsed by
python-hcl2 in the deploy tools' virtualenv (.tools/venv, not the project's .venv), and the
settings are read from the parsed blocks, with `var.NAME` resolved to the variable's default,
which is what `terraform apply` without a tfvars file would use.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_tools import DEPLOY, ROOT, helm_template, run_tool
from terraform_hcl import Stack, parse

TERRAFORM = DEPLOY / "terraform" / "aws-eks"
#: @cdktf/hcl-tools: HashiCorp's hclwrite formatter compiled to WebAssembly, the formatting core of
#: `terraform fmt`, for where no terraform binary can be installed.
HCL_TOOLS = ROOT / ".tools" / "hcl-tools" / "node_modules" / "@cdktf" / "hcl-tools"
TF_FILES = (
    "versions.tf",
    "variables.tf",
    "outputs.tf",
    "main.tf",
    "rds.tf",
    "s3.tf",
    "efs.tf",
    "iam.tf",
)
TFVARS_EXAMPLE = "terraform.tfvars.example"


def _terraform_files() -> list[Path]:
    return [*sorted(TERRAFORM.glob("*.tf")), TERRAFORM / TFVARS_EXAMPLE]


@pytest.fixture(scope="module")
def parsed() -> dict:
    return parse(_terraform_files())


@pytest.fixture(scope="module")
def stack(parsed: dict) -> Stack:
    return Stack.load(parsed)


def _sources(*, skip: tuple[str, ...] = ()) -> str:
    return "\n".join(p.read_text() for p in sorted(TERRAFORM.glob("*.tf")) if p.name not in skip)


def _statements(stack: Stack, name: str) -> list[dict]:
    return stack.hcl.blocks(stack.data("aws_iam_policy_document", name), "statement")


# ---------------------------------------------------------------------------------------------
# Parsing and conventions
# ---------------------------------------------------------------------------------------------


def test_every_file_parses(parsed: dict) -> None:
    names = {Path(p).name for p in parsed["files"]}
    assert not parsed["errors"], parsed["errors"]
    assert set(TF_FILES) | {TFVARS_EXAMPLE} <= names, f"missing: {set(TF_FILES) - names}"


def test_versions_pin_terraform_and_providers(stack: Stack) -> None:
    hcl = stack.hcl
    (terraform,) = stack.files["versions.tf"]["terraform"]
    assert hcl.attr(terraform, "required_version") == ">= 1.6.0"
    (required,) = hcl.blocks(terraform, "required_providers")
    providers = {k: hcl.attr(required, k) for k in required if not k.startswith("__")}
    assert providers["aws"]["source"] == "hashicorp/aws"
    assert re.fullmatch(r"~> 5\.\d+", providers["aws"]["version"]), providers["aws"]
    for name, spec in providers.items():
        assert spec.get("version", "").startswith("~>"), f"provider {name} is not pinned: {spec}"
    # Plain resources only, so checkov sees every resource without downloading module sources.
    assert all("module" not in body for body in stack.files.values())


def test_every_variable_has_a_description_and_a_type(stack: Stack) -> None:
    for name, body in stack.variables.items():
        assert stack.hcl.attr(body, "description", "").strip(), (
            f"variable {name} has no description"
        )
        assert stack.hcl.attr(body, "type", None), f"variable {name} has no type"


@pytest.mark.parametrize(
    "name",
    [
        "region",
        "cluster_name",
        "kubernetes_version",
        "availability_zones",
        "vpc_cidr",
        "cluster_endpoint_public_access_cidrs",
        "system_node_min_size",
        "system_node_max_size",
        "gpu_instance_types",
        "gpu_node_min_size",
        "gpu_node_max_size",
        "db_instance_class",
        "db_backup_retention_days",
        "db_master_username",
    ],
)
def test_variables_that_can_be_wrong_are_validated(stack: Stack, name: str) -> None:
    (validation, *_) = stack.hcl.blocks(stack.variables[name], "validation")
    condition = stack.hcl.attr(validation, "condition")
    assert f"var.{name}" in condition, condition
    assert stack.hcl.attr(validation, "error_message").strip()


def test_nothing_secret_is_a_variable_with_a_default(stack: Stack) -> None:
    secretish = re.compile(r"password|secret|token|key")
    for name, body in stack.variables.items():
        if secretish.search(name):
            assert "default" not in body, f"variable {name} looks secret and has a default"
    # The database password is not an input at all: RDS generates it into Secrets Manager.
    assert not [name for name in stack.variables if "password" in name]
    db = stack.resource("aws_db_instance", "this")
    assert stack.hcl.attr(db, "manage_master_user_password") is True
    assert "password" not in db


def test_every_variable_is_used(stack: Stack) -> None:
    code = _sources(skip=("variables.tf",))
    unused = [name for name in stack.variables if not re.search(rf"\bvar\.{name}\b", code)]
    assert not unused, f"declared but never used: {unused}"


def test_every_reference_names_something_declared(stack: Stack) -> None:
    """What `terraform validate` would catch first, without providers: a reference to a resource,
    data source, local or variable that no block declares."""
    code = "\n".join(line for line in _sources().splitlines() if not line.lstrip().startswith("#"))
    resources = {f"{t}.{n}" for t, n in stack.resources()}
    data = {f"data.{t}.{n}" for t, n in stack.resources("data")}
    ref = r"(?<![\w.])"
    missing = [
        *{m for m in re.findall(ref + r"((?:aws|tls)_[a-z0-9_]+\.[a-z0-9_]+)", code)} - resources,
        *{m for m in re.findall(ref + r"(data\.[a-z0-9_]+\.[a-z0-9_]+)", code)} - data,
        *{f"local.{m}" for m in re.findall(ref + r"local\.([a-z0-9_]+)", code)}
        - {f"local.{k}" for k in stack.locals},
        *{f"var.{m}" for m in re.findall(ref + r"var\.([a-z0-9_]+)", code)}
        - {f"var.{k}" for k in stack.variables},
    ]
    assert not missing, f"undeclared: {sorted(missing)}"


def test_tfvars_example_sets_only_declared_variables(parsed: dict, stack: Stack) -> None:
    example = next(body for p, body in parsed["files"].items() if p.endswith(TFVARS_EXAMPLE))
    keys = {k for k in example if not k.startswith("__")}
    assert keys, "terraform.tfvars.example sets nothing"
    assert keys <= set(stack.variables), f"not declared: {keys - set(stack.variables)}"


def test_formatting_beyond_hclwrite_matches_terraform_fmt(stack: Stack) -> None:
    """What `terraform fmt` rewrites on top of hclwrite's layout (its formatBody): values that are
    only an interpolation, bare or quoted variable types, unquoted block labels."""
    for path in _terraform_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.name}:{number}: {line.strip()}"
            assert not re.search(r'=\s*"\$\{[^"{}]*\}"\s*$', line), (
                f"interpolation-only value: {where}"
            )
            assert not re.match(r"\s*(resource|data|variable|output)\s+[a-z]", line), (
                f"label: {where}"
            )
            assert "\t" not in line and line == line.rstrip(), f"tab or trailing blank: {where}"
    for name, body in stack.variables.items():
        kind = stack.hcl.expression(body, "type")
        assert kind is not None, f"variable {name}: a quoted (pre-0.12) type"
        assert kind not in ("list", "map", "set"), (
            f"variable {name}: {kind} without an element type"
        )


def test_hclwrite_format_would_not_change_the_files() -> None:
    node = shutil.which("node")
    if node is None or not HCL_TOOLS.exists():
        pytest.skip(
            f"the hclwrite formatter is not installed in {HCL_TOOLS} (npm @cdktf/hcl-tools)"
        )
    script = (
        "const fs = require('fs');"
        f"const {{ format }} = require({json.dumps(str(HCL_TOOLS))});"
        "(async () => { for (const f of process.argv.slice(1)) {"
        " const src = fs.readFileSync(f, 'utf8');"
        " if ((await format(src)) !== src) console.log(f); } })();"
    )
    files = [str(p) for p in _terraform_files()]
    completed = subprocess.run(
        [node, "-e", script, *files], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "", f"terraform fmt would reformat:\n{completed.stdout}"


# ---------------------------------------------------------------------------------------------
# What the stack holds
# ---------------------------------------------------------------------------------------------


def test_vpc_spans_three_zones_with_public_and_private_subnets(stack: Stack) -> None:
    hcl = stack.hcl
    assert len(set(stack.default("availability_zones"))) == 3
    for kind in ("public", "private"):
        assert hcl.attr(stack.resource("aws_subnet", kind), "count") == 3
    nat = stack.resource("aws_nat_gateway", "this")
    assert "aws_subnet.public" in hcl.attr(nat, "subnet_id")
    routes = hcl.blocks(stack.resource("aws_route_table", "private"), "route")
    assert any("aws_nat_gateway.this" in hcl.attr(r, "nat_gateway_id") for r in routes)
    for kind in ("public", "private"):
        assert (
            hcl.attr(stack.resource("aws_subnet", kind), "map_public_ip_on_launch", False) is False
        )


def test_eks_cluster_is_private_encrypted_logged_and_recent(stack: Stack) -> None:
    hcl = stack.hcl
    cluster = stack.resource("aws_eks_cluster", "this")
    major, minor = map(int, stack.value(cluster, "version").split("."))
    assert (major, minor) >= (1, 31)
    (vpc,) = hcl.blocks(cluster, "vpc_config")
    assert hcl.attr(vpc, "endpoint_private_access") is True
    assert stack.value(vpc, "endpoint_public_access") is False
    assert "aws_subnet.private" in hcl.attr(vpc, "subnet_ids")
    (encryption,) = hcl.blocks(cluster, "encryption_config")
    assert hcl.attr(encryption, "resources") == ["secrets"]
    (provider,) = hcl.blocks(encryption, "provider")
    assert hcl.attr(provider, "key_arn").startswith("${aws_kms_key.")
    assert set(hcl.attr(cluster, "enabled_cluster_log_types")) == {
        "api",
        "audit",
        "authenticator",
        "controllerManager",
        "scheduler",
    }


def _scaling(stack: Stack, group: dict) -> tuple[int, int]:
    (scaling,) = stack.hcl.blocks(group, "scaling_config")
    return stack.value(scaling, "min_size"), stack.value(scaling, "max_size")


def test_system_node_group_is_on_demand_t3_medium_from_two_to_four(stack: Stack) -> None:
    group = stack.resource("aws_eks_node_group", "system")
    assert stack.value(group, "capacity_type") == "ON_DEMAND"
    assert stack.value(group, "instance_types") == ["t3.medium"]
    assert _scaling(stack, group) == (2, 4)
    assert not stack.hcl.blocks(group, "taint")


def test_gpu_node_group_is_tainted_spot_from_zero_to_five(stack: Stack) -> None:
    hcl = stack.hcl
    group = stack.resource("aws_eks_node_group", "gpu")
    assert stack.value(group, "capacity_type") == "SPOT"
    types = stack.value(group, "instance_types")
    assert types and all(re.match(r"(g4dn|g5)\.", t) for t in types), types
    assert _scaling(stack, group) == (0, 5)
    assert hcl.attr(group, "ami_type") == "AL2023_x86_64_NVIDIA"
    taints = [
        {k: hcl.attr(t, k) for k in ("key", "value", "effect")} for t in hcl.blocks(group, "taint")
    ]
    assert taints == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
    labels = hcl.attr(group, "labels")
    assert labels["visionops.io/gpu"] == "true"
    # EKS sets eks.amazonaws.com/capacityType itself and rejects labels with its prefix.
    assert not [k for k in labels if k.startswith("eks.amazonaws.com/")]


def test_ray_gpu_workers_land_on_the_gpu_node_group(stack: Stack) -> None:
    """The ray-cluster chart's GPU group selects the GPU nodes' labels and tolerates their taint."""
    chart = DEPLOY / "helm" / "ray-cluster"
    if not (chart / "Chart.yaml").exists():
        pytest.skip(f"{chart.relative_to(ROOT)} does not exist yet")
    hcl = stack.hcl
    group = stack.resource("aws_eks_node_group", "gpu")
    node_labels = {**hcl.attr(group, "labels"), "eks.amazonaws.com/capacityType": "SPOT"}
    (taint,) = hcl.blocks(group, "taint")

    clusters = [d for d in helm_template(chart) if d.get("kind") == "RayCluster"]
    assert clusters, "the ray-cluster chart renders no RayCluster"
    gpu_groups = [
        g
        for c in clusters
        for g in c["spec"].get("workerGroupSpecs", [])
        if any(
            "nvidia.com/gpu" in ctr.get("resources", {}).get("limits", {})
            for ctr in g["template"]["spec"]["containers"]
        )
    ]
    assert gpu_groups, "no RayCluster worker group requests nvidia.com/gpu"
    for g in gpu_groups:
        pod = g["template"]["spec"]
        selector = pod.get("nodeSelector", {})
        assert selector.get("eks.amazonaws.com/capacityType") == "SPOT", selector
        assert selector.get("visionops.io/gpu") == "true", selector
        assert all(node_labels.get(k) == v for k, v in selector.items()), (selector, node_labels)
        assert any(
            t.get("key") == hcl.attr(taint, "key")
            and t.get("effect") == "NoSchedule"
            and (t.get("operator") == "Exists" or t.get("value") == hcl.attr(taint, "value"))
            for t in pod.get("tolerations", [])
        ), pod.get("tolerations")


def test_rds_is_multi_az_encrypted_backed_up_and_private(stack: Stack) -> None:
    hcl = stack.hcl
    db = stack.resource("aws_db_instance", "this")
    assert hcl.attr(db, "engine") == "postgres"
    assert str(hcl.attr(db, "engine_version")).split(".")[0] == "16"
    assert stack.value(db, "instance_class") == "db.t3.small"
    for flag in (
        "multi_az",
        "storage_encrypted",
        "deletion_protection",
        "iam_database_authentication_enabled",
        "performance_insights_enabled",
        "copy_tags_to_snapshot",
        "auto_minor_version_upgrade",
    ):
        assert hcl.attr(db, flag) is True, flag
    assert hcl.attr(db, "publicly_accessible") is False
    assert hcl.attr(db, "skip_final_snapshot") is False
    assert stack.value(db, "backup_retention_period") >= 7
    assert hcl.attr(db, "kms_key_id").startswith("${aws_kms_key.")
    assert hcl.attr(db, "monitoring_interval") > 0
    subnets = stack.resource("aws_db_subnet_group", "this")
    assert "aws_subnet.private" in hcl.attr(subnets, "subnet_ids")


@pytest.mark.parametrize(("group", "port"), [("rds", 5432), ("efs", 2049)])
def test_data_stores_accept_only_their_port_from_the_node_security_group(
    stack: Stack, group: str, port: int
) -> None:
    hcl = stack.hcl
    (ingress,) = hcl.blocks(stack.resource("aws_security_group", group), "ingress")
    assert (hcl.attr(ingress, "from_port"), hcl.attr(ingress, "to_port")) == (port, port)
    assert hcl.attr(ingress, "protocol") == "tcp"
    assert hcl.attr(ingress, "security_groups") == ["${aws_security_group.node.id}"]
    assert "cidr_blocks" not in ingress and "ipv6_cidr_blocks" not in ingress
    # ... and the node security group is what the nodes of both groups carry.
    for name in ("system", "gpu"):
        template = stack.resource("aws_launch_template", name)
        assert "${aws_security_group.node.id}" in hcl.attr(template, "vpc_security_group_ids")


def test_rds_refuses_connections_without_tls(stack: Stack) -> None:
    hcl = stack.hcl
    params = {
        hcl.attr(p, "name"): hcl.attr(p, "value")
        for p in hcl.blocks(stack.resource("aws_db_parameter_group", "this"), "parameter")
    }
    assert params["rds.force_ssl"] == "1"
    db = stack.resource("aws_db_instance", "this")
    assert hcl.attr(db, "parameter_group_name") == "${aws_db_parameter_group.this.name}"


def test_ray_shared_file_system_is_encrypted_and_in_every_private_subnet(stack: Stack) -> None:
    hcl = stack.hcl
    efs = stack.resource("aws_efs_file_system", "ray")
    assert hcl.attr(efs, "encrypted") is True
    assert hcl.attr(efs, "kms_key_id") == "${aws_kms_key.efs.arn}"
    targets = stack.resource("aws_efs_mount_target", "ray")
    assert hcl.attr(targets, "count") == 3
    assert hcl.attr(targets, "subnet_id") == "${aws_subnet.private[count.index].id}"
    assert hcl.attr(targets, "security_groups") == ["${aws_security_group.efs.id}"]
    denies = [s for s in _statements(stack, "efs") if hcl.attr(s, "effect", "Allow") == "Deny"]
    (condition,) = hcl.blocks(denies[0], "condition")
    assert (hcl.attr(condition, "variable"), hcl.attr(condition, "values")) == (
        "aws:SecureTransport",
        ["false"],
    )


def test_artifact_bucket_moves_old_objects_to_glacier_after_90_days(stack: Stack) -> None:
    hcl = stack.hcl
    rules = hcl.blocks(stack.resource("aws_s3_bucket_lifecycle_configuration", "artifacts"), "rule")
    noncurrent = [
        (hcl.attr(t, "noncurrent_days"), hcl.attr(t, "storage_class"))
        for r in rules
        for t in hcl.blocks(r, "noncurrent_version_transition")
    ]
    current = [
        (hcl.attr(t, "days"), hcl.attr(t, "storage_class"))
        for r in rules
        for t in hcl.blocks(r, "transition")
    ]
    assert (90, "GLACIER") in noncurrent, noncurrent
    # Current objects (models a deployment may load) go to the Glacier class read in milliseconds.
    assert (90, "GLACIER_IR") in current, current
    assert all(hcl.attr(r, "status") == "Enabled" for r in rules)


def test_buckets_deny_plain_http(stack: Stack) -> None:
    hcl = stack.hcl
    for bucket in ("artifacts", "logs"):
        policy = stack.resource("aws_s3_bucket_policy", bucket)
        assert hcl.attr(policy, "policy") == f"${{data.aws_iam_policy_document.{bucket}.json}}"
        denies = [s for s in _statements(stack, bucket) if hcl.attr(s, "effect", "Allow") == "Deny"]
        assert len(denies) == 1, bucket
        (deny,) = denies
        assert hcl.attr(deny, "actions") == ["s3:*"]
        resources = hcl.attr(deny, "resources")
        assert f"${{aws_s3_bucket.{bucket}.arn}}" in resources
        assert f"${{aws_s3_bucket.{bucket}.arn}}/*" in resources
        (condition,) = hcl.blocks(deny, "condition")
        assert {k: hcl.attr(condition, k) for k in ("test", "variable", "values")} == {
            "test": "Bool",
            "variable": "aws:SecureTransport",
            "values": ["false"],
        }


def test_artifact_bucket_is_versioned_kms_encrypted_private_and_logged(stack: Stack) -> None:
    hcl = stack.hcl
    (versioning,) = hcl.blocks(
        stack.resource("aws_s3_bucket_versioning", "artifacts"), "versioning_configuration"
    )
    assert hcl.attr(versioning, "status") == "Enabled"
    (rule,) = hcl.blocks(
        stack.resource("aws_s3_bucket_server_side_encryption_configuration", "artifacts"), "rule"
    )
    (default,) = hcl.blocks(rule, "apply_server_side_encryption_by_default")
    assert hcl.attr(default, "sse_algorithm") == "aws:kms"
    assert hcl.attr(default, "kms_master_key_id") == "${aws_kms_key.artifacts.arn}"
    block = stack.resource("aws_s3_bucket_public_access_block", "artifacts")
    for flag in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert hcl.attr(block, flag) is True, flag
    (ownership,) = hcl.blocks(
        stack.resource("aws_s3_bucket_ownership_controls", "artifacts"), "rule"
    )
    assert hcl.attr(ownership, "object_ownership") == "BucketOwnerEnforced"
    logging = stack.resource("aws_s3_bucket_logging", "artifacts")
    assert hcl.attr(logging, "target_bucket") == "${aws_s3_bucket.logs.id}"


def test_irsa_roles_trust_one_service_account_each(stack: Stack) -> None:
    hcl = stack.hcl
    irsa = {
        role: [
            re.sub(r"\$\{var\.([a-z_]+)\}", lambda m: stack.default(m.group(1)), s)
            for s in subjects
        ]
        for role, subjects in stack.locals["irsa"].items()
    }
    assert irsa["mlflow"] == ["system:serviceaccount:visionops:mlflow"]
    assert irsa["ray"] == ["system:serviceaccount:visionops:ray"]
    (statement,) = _statements(stack, "irsa_assume")
    assert hcl.attr(statement, "actions") == ["sts:AssumeRoleWithWebIdentity"]
    conditions = {
        hcl.attr(c, "variable"): (hcl.attr(c, "test"), hcl.attr(c, "values"))
        for c in hcl.blocks(statement, "condition")
    }
    # StringEquals, not StringLike: no wildcard subject.
    assert conditions == {
        "${local.oidc_issuer}:sub": ("StringEquals", "${each.value}"),
        "${local.oidc_issuer}:aud": ("StringEquals", ["sts.amazonaws.com"]),
    }
    for role in ("mlflow", "ray"):
        body = stack.resource("aws_iam_role", role)
        assert (
            hcl.attr(body, "assume_role_policy")
            == f'${{data.aws_iam_policy_document.irsa_assume["{role}"].json}}'
        )
        policy = stack.resource("aws_iam_role_policy", role)
        assert (
            hcl.attr(policy, "policy")
            == f'${{data.aws_iam_policy_document.bucket_prefix["{role}"].json}}'
        )


def test_irsa_s3_access_is_limited_to_each_role_s_own_prefix(stack: Stack) -> None:
    hcl = stack.hcl
    prefixes = {
        role: stack.resolve(ref) for role, ref in stack.locals["bucket_prefix_access"].items()
    }
    assert prefixes == {"mlflow": "mlflow", "ray": "ray"}
    bucket = "${aws_s3_bucket.artifacts.arn}"
    for statement in _statements(stack, "bucket_prefix"):
        actions, resources = hcl.attr(statement, "actions"), hcl.attr(statement, "resources")
        assert "*" not in resources and not any(a.endswith(":*") for a in actions), statement
        if any(a.startswith("kms:") for a in actions):
            assert resources == ["${aws_kms_key.artifacts.arn}"]
            assert set(actions) == {"kms:GenerateDataKey", "kms:Decrypt"}
        elif "s3:ListBucket" in actions:
            (condition,) = hcl.blocks(statement, "condition")
            assert hcl.attr(condition, "variable") == "s3:prefix"
            assert hcl.attr(condition, "values") == ["${each.value}", "${each.value}/*"]
        elif any(a in actions for a in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject")):
            assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"} <= set(actions)
            assert resources == [f"{bucket}/${{each.value}}", f"{bucket}/${{each.value}}/*"]
        else:
            assert actions == ["s3:GetBucketLocation"] and resources == [bucket], statement


def _conditions(stack: Stack, statement: dict) -> set[tuple[str, str, tuple[str, ...]]]:
    hcl = stack.hcl
    return {
        (hcl.attr(c, "test"), hcl.attr(c, "variable"), tuple(hcl.attr(c, "values")))
        for c in hcl.blocks(statement, "condition")
    }


@pytest.mark.parametrize(
    ("role", "policy", "subject"),
    [
        ("load_balancer_controller", "load_balancer_controller", "aws-load-balancer-controller"),
        ("cluster_autoscaler", "cluster_autoscaler", "cluster-autoscaler"),
    ],
)
def test_add_on_roles_trust_exactly_their_service_account(
    stack: Stack, role: str, policy: str, subject: str
) -> None:
    """The names the add-ons' Helm values give their service accounts (scripts/lib/common.sh)."""
    hcl = stack.hcl
    key = role.replace("_", "-")
    assert stack.locals["irsa"][key] == [f"system:serviceaccount:kube-system:{subject}"]
    body = stack.resource("aws_iam_role", role)
    assert (
        hcl.attr(body, "assume_role_policy")
        == f'${{data.aws_iam_policy_document.irsa_assume["{key}"].json}}'
    )
    attached = stack.resource("aws_iam_role_policy", role)
    assert hcl.attr(attached, "role") == f"${{aws_iam_role.{role}.id}}"
    assert hcl.attr(attached, "policy") == f"${{data.aws_iam_policy_document.{policy}.json}}"
    output = stack.outputs[f"{role}_role_arn"]
    assert hcl.attr(output, "value") == f"${{aws_iam_role.{role}.arn}}"


CLUSTER_TAG = "elbv2.k8s.aws/cluster"
OWNED = ("Null", f"aws:ResourceTag/{CLUSTER_TAG}", ("false",))  # acts only on its own resources
TAGS_NEW = ("Null", f"aws:RequestTag/{CLUSTER_TAG}", ("false",))  # creates only with the tag
KEEPS_TAG = ("Null", f"aws:RequestTag/{CLUSTER_TAG}", ("true",))  # never touches the tag itself
#: What the controller may do only to load balancers, target groups and security groups it owns.
OWNED_ONLY = {
    "ec2:DeleteSecurityGroup",
    "elasticloadbalancing:DeleteLoadBalancer",
    "elasticloadbalancing:DeleteTargetGroup",
    "elasticloadbalancing:ModifyLoadBalancerAttributes",
    "elasticloadbalancing:ModifyTargetGroup",
    "elasticloadbalancing:ModifyTargetGroupAttributes",
    "elasticloadbalancing:SetIpAddressType",
    "elasticloadbalancing:SetSecurityGroups",
    "elasticloadbalancing:SetSubnets",
}


def test_load_balancer_controller_policy_has_the_documented_conditions(stack: Stack) -> None:
    """The conditions of the controller's documented iam_policy.json (v3.5.0) on its tag."""
    hcl = stack.hcl
    statements = _statements(stack, "load_balancer_controller")
    sids = [hcl.attr(s, "sid") for s in statements]
    assert len(sids) == len(set(sids)) == 16, sids
    granted: dict[str, list[set]] = {}
    for statement in statements:
        assert hcl.attr(statement, "effect", "Allow") == "Allow"
        actions, resources = hcl.attr(statement, "actions"), hcl.attr(statement, "resources")
        assert not [a for a in actions if "*" in a], actions
        # Explicit ARNs are this region's and account's, not any region's as in the document.
        assert all(
            r == "*" or r.startswith(("${local.elb_arn_prefix}:", "${local.security_group_arns}"))
            for r in resources
        ), resources
        for action in actions:
            granted.setdefault(action, []).append(_conditions(stack, statement))

    assert granted["iam:CreateServiceLinkedRole"] == [
        {("StringEquals", "iam:AWSServiceName", ("elasticloadbalancing.amazonaws.com",))}
    ]
    for action in OWNED_ONLY:
        assert granted[action] and all(OWNED in c for c in granted[action]), action
    for action in (
        "elasticloadbalancing:CreateLoadBalancer",
        "elasticloadbalancing:CreateTargetGroup",
    ):
        assert granted[action] == [{TAGS_NEW}], action
    # Security groups: tagged when created, re-tagged only when owned and the tag stays.
    assert sorted(map(sorted, granted["ec2:CreateTags"])) == sorted(
        [
            sorted({("StringEquals", "ec2:CreateAction", ("CreateSecurityGroup",)), TAGS_NEW}),
            sorted({KEEPS_TAG, OWNED}),
        ]
    )
    assert granted["ec2:DeleteTags"] == [{KEEPS_TAG, OWNED}]
    # Load balancers and target groups likewise (listeners and rules carry no ownership tag).
    assert {
        (
            "StringEquals",
            "elasticloadbalancing:CreateAction",
            ("CreateTargetGroup", "CreateLoadBalancer"),
        ),
        TAGS_NEW,
    } in granted["elasticloadbalancing:AddTags"]
    assert {KEEPS_TAG, OWNED} in granted["elasticloadbalancing:RemoveTags"]
    # Ingress rules on its own groups, and (unconditioned, as documented) on the nodes' groups.
    assert sorted(map(len, granted["ec2:AuthorizeSecurityGroupIngress"])) == [0, 1]


def test_subnets_carry_the_load_balancer_role_tags(stack: Stack) -> None:
    """Where the AWS Load Balancer Controller puts internet-facing and internal load balancers."""
    public = stack.hcl.attr(stack.resource("aws_subnet", "public"), "tags")
    private = stack.hcl.attr(stack.resource("aws_subnet", "private"), "tags")
    assert public.get("kubernetes.io/role/elb") == "1"
    assert private.get("kubernetes.io/role/internal-elb") == "1"
    assert "kubernetes.io/role/internal-elb" not in public
    assert "kubernetes.io/role/elb" not in private


def test_node_groups_are_discovered_by_the_cluster_autoscaler(stack: Stack) -> None:
    hcl = stack.hcl
    discovery = stack.locals["autoscaler_discovery_tags"]
    assert discovery == {
        "k8s.io/cluster-autoscaler/enabled": "true",
        "k8s.io/cluster-autoscaler/${var.cluster_name}": "owned",
    }
    # The autoscaler may resize exactly the groups that carry the owned tag.
    (resize,) = [
        s
        for s in _statements(stack, "cluster_autoscaler")
        if hcl.attr(s, "sid") == "ResizeOwnGroups"
    ]
    assert _conditions(stack, resize) == {
        (
            "StringEquals",
            "aws:ResourceTag/k8s.io/cluster-autoscaler/${var.cluster_name}",
            ("owned",),
        )
    }
    for group, tags in {
        "system": "${local.autoscaler_discovery_tags}",
        "gpu": "${merge(local.autoscaler_discovery_tags,local.gpu_node_template_tags)}",
    }.items():
        tag = stack.resource("aws_autoscaling_group_tag", group)
        assert hcl.attr(tag, "for_each").replace(" ", "") == tags
        assert (
            hcl.attr(tag, "autoscaling_group_name")
            == f"${{aws_eks_node_group.{group}.resources[0].autoscaling_groups[0].name}}"
        )
        (block,) = hcl.blocks(tag, "tag")
        assert (hcl.attr(block, "key"), hcl.attr(block, "value")) == (
            "${each.key}",
            "${each.value}",
        )
        assert hcl.attr(block, "propagate_at_launch") is False


def test_gpu_group_tells_the_autoscaler_its_labels_and_taint_at_zero_nodes(stack: Stack) -> None:
    """The node-template tags say what a GPU node would carry: its labels (with the capacity
    type EKS adds) and its taint, as `value:Effect`."""
    hcl = stack.hcl
    group = stack.resource("aws_eks_node_group", "gpu")
    labels = {**hcl.attr(group, "labels"), "eks.amazonaws.com/capacityType": "SPOT"}
    effects = {
        "NO_SCHEDULE": "NoSchedule",
        "NO_EXECUTE": "NoExecute",
        "PREFER_NO_SCHEDULE": "PreferNoSchedule",
    }
    prefix = "k8s.io/cluster-autoscaler/node-template"
    expected = {f"{prefix}/label/{key}": value for key, value in labels.items()}
    for taint in hcl.blocks(group, "taint"):
        expected[f"{prefix}/taint/{hcl.attr(taint, 'key')}"] = (
            f"{hcl.attr(taint, 'value')}:{effects[hcl.attr(taint, 'effect')]}"
        )
    assert stack.locals["gpu_node_template_tags"] == expected


def test_outputs_name_what_the_setup_needs(stack: Stack) -> None:
    outputs = stack.outputs
    for name in (
        "cluster_name",
        "cluster_endpoint",
        "oidc_provider_arn",
        "rds_endpoint",
        "db_master_secret_arn",
        "artifact_bucket_name",
        "mlflow_role_arn",
        "ray_role_arn",
        "vpc_id",
        "load_balancer_controller_role_arn",
        "cluster_autoscaler_role_arn",
    ):
        assert name in outputs, f"no output {name}"
    for name, body in outputs.items():
        assert stack.hcl.attr(body, "description", "").strip(), f"output {name} has no description"
    secret = stack.hcl.attr(outputs["db_master_secret_arn"], "value")
    assert secret == "${aws_db_instance.this.master_user_secret[0].secret_arn}"


# ---------------------------------------------------------------------------------------------
# checkov: one run over the folder
# ---------------------------------------------------------------------------------------------

SKIP_COMMENT = re.compile(r"#\s*checkov:skip=(CKV2?_AWS_\d+):(.*)$", re.MULTILINE)


@pytest.fixture(scope="module")
def checkov() -> str:
    # --skip-download: no Prisma Cloud look-up of guidelines, which fails offline. The folder calls
    # no module, so there is no module source to download either.
    result = run_tool(
        "checkov",
        "-d",
        str(TERRAFORM),
        "--framework",
        "terraform",
        "--quiet",
        "--compact",
        "--skip-download",
    )
    assert result.returncode == 0, result.output
    return result.stdout


def test_checkov_reports_no_failed_check(checkov: str) -> None:
    counts = re.search(
        r"Passed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", checkov
    )
    assert counts, checkov
    passed, failed, _ = map(int, counts.groups())
    assert failed == 0, checkov
    # A folder checkov could not read would pass with nothing checked.
    assert passed > 200, checkov


def test_every_checkov_skip_has_a_reason_and_is_applied(checkov: str) -> None:
    skips = SKIP_COMMENT.findall(_sources())
    assert all(len(reason.strip()) > 20 for _, reason in skips), skips
    skipped = int(re.search(r"Skipped checks: (\d+)", checkov).group(1))
    # Each comment sits inside the block it skips, so checkov applies every one of them.
    assert skipped == len(skips), (skipped, skips)
