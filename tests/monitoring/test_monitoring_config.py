"""deploy/monitoring checked with the real tools, and against the metrics the code exports.

promtool (Debian package prometheus) checks the Prometheus config and rules and runs the rule
unit tests of deploy/monitoring/tests/; amtool (prometheus-alertmanager) checks the Alertmanager
config, its routing and the Slack template. ``make test`` installs both packages
(scripts/install-system-packages.sh); where they are missing those tests are skipped with that
reason. The dashboards, the rules and the compose file are checked as files: every metric they
name is one that ``visionops serve`` or a training run exports, or a series recording.yml
records. Each tool call takes about 0.1 s.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from visionops.serving.metrics import ServingMetrics
from visionops.tracking.pushgateway import METRIC_NAMES as TRAINING_METRICS

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
COMPOSE_DIR = ROOT / "deploy" / "compose"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yml"))
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
DATASOURCE_UID = "visionops-prometheus"
MONITORING_SERVICES = ("prometheus", "alertmanager", "pushgateway", "grafana")

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
_INSTALL = "run scripts/install-system-packages.sh"
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason=f"needs promtool (Debian package prometheus) on PATH: {_INSTALL}"
)
needs_amtool = pytest.mark.skipif(
    AMTOOL is None,
    reason=f"needs amtool (Debian package prometheus-alertmanager) on PATH: {_INSTALL}",
)


def _tool(*command: str) -> subprocess.CompletedProcess[str]:
    """``command`` run from deploy/monitoring/, where the configs name their files."""
    return subprocess.run(
        command, cwd=MONITORING, capture_output=True, text=True, timeout=60, check=False
    )


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _rules() -> Iterator[dict[str, Any]]:
    for path in RULE_FILES:
        for group in _load(path)["groups"]:
            yield from group["rules"]


def _alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


@cache
def _recorded() -> frozenset[str]:
    return frozenset(rule["record"] for rule in _rules() if "record" in rule)


# --- the metric names ---------------------------------------------------------------------------


@cache
def _exported_series() -> tuple[frozenset[str], frozenset[str]]:
    """The series names the code exports, and the histograms' base names."""
    series = set(TRAINING_METRICS)  # all gauges
    histograms: set[str] = set()
    for family in ServingMetrics().registry.collect():
        if family.type == "counter":
            series.add(family.name + "_total")  # prometheus_client keeps the name without it
        elif family.type == "histogram":
            histograms.add(family.name)
            series.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            series.add(family.name)
    return frozenset(series), frozenset(histograms)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\]]*\]")  # [5m], [$__rate_interval]
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_references(expr: str) -> set[str]:
    """The visionops series and recorded series (``level:metric:operation``) ``expr`` reads;
    label values, durations, functions and label names are not."""
    bare = _RANGE.sub("", _STRING.sub('""', expr))
    return {
        token
        for token in _IDENTIFIER.findall(bare)
        if token.startswith("visionops_") or ":" in token
    }


def unknown_metrics(expr: str) -> list[str]:
    series, histograms = _exported_series()
    recorded = _recorded()
    unknown = []
    for name in sorted(metric_references(expr)):
        if ":" in name:
            metric = name.split(":")[1]
            if name not in recorded or (metric not in series and metric not in histograms):
                unknown.append(name)
        elif name not in series:
            unknown.append(name)
    return unknown


def test_the_reference_check_sees_the_metric_names() -> None:
    expr = (
        'sum by (route) (rate(visionops_serving_requests_total{route=~"/v1/visionops_x"}'
        "[$__rate_interval])) / instance:visionops_serving_queue_wait_seconds:quantile_rate5m"
        " + visionops_serving_batch_size_bucket + visionops_training_loss_sum + level:nothing:x"
    )
    assert unknown_metrics(expr) == ["level:nothing:x", "visionops_training_loss_sum"]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_rules_read_only_exported_metrics(path: Path) -> None:
    for group in _load(path)["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            assert not unknown_metrics(rule["expr"]), (name, unknown_metrics(rule["expr"]))


# --- Prometheus ---------------------------------------------------------------------------------


@needs_promtool
def test_prometheus_config_is_valid() -> None:
    result = _tool("promtool", "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(RULE_FILES)} rule files found" in result.stdout


def test_prometheus_scrapes_serve_the_pushgateway_and_itself() -> None:
    config = _load(MONITORING / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"prometheus", "visionops_serving", "pushgateway"}
    # The pushed job and run_id labels must survive the scrape.
    assert jobs["pushgateway"]["honor_labels"] is True
    assert config["rule_files"] == ["rules/*.yml"]
    assert config["alerting"]["alertmanagers"]


@needs_promtool
def test_rule_files_are_valid() -> None:
    files = [str(path.relative_to(MONITORING)) for path in RULE_FILES]
    result = _tool("promtool", "check", "rules", "--lint=all", "--lint-fatal", *files)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    files = [str(path.relative_to(MONITORING)) for path in RULE_TESTS]
    result = _tool("promtool", "test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for test in _load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = set(_alerts())
    assert alerts == {
        "TrainingFailed",
        "TrainingStalled",
        "ServingErrorRateHigh",
        "ServingLatencyHigh",
        "PredictionConfidenceDrop",
    }
    assert alerts - firing == set(), "alerts no unit test sees firing"
    assert alerts - quiet == set(), "alerts no unit test sees silent"


def test_every_alert_has_a_severity_a_summary_and_a_section_in_the_docs() -> None:
    docs = (ROOT / "docs" / "monitoring.md").read_text()
    for name, rule in _alerts().items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert "for" in rule, f"{name}: state its wait, so a test can shorten it"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        assert f"`{name}`" in docs, f"docs/monitoring.md does not describe {name}"


def test_rollback_alerts_name_the_served_version() -> None:
    rollback = {name for name, rule in _alerts().items() if rule["labels"].get("action")}
    assert rollback == {"ServingErrorRateHigh"}
    for name in rollback:
        labels = _alerts()[name]["labels"]
        assert labels["action"] == "rollback"
        # From visionops_serving_model_info{role="production"}, joined into the expression.
        assert labels["model_name"] == "{{ $labels.name }}"
        assert labels["model_version"] == "{{ $labels.version }}"
        assert 'visionops_serving_model_info{role="production"}' in _alerts()[name]["expr"]


# --- Alertmanager -------------------------------------------------------------------------------


@needs_amtool
def test_alertmanager_config_is_valid() -> None:
    result = _tool("amtool", "check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 receivers" in result.stdout and "1 templates" in result.stdout


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["alertname=ServingErrorRateHigh", "action=rollback"], "visionops-rollback,slack"),
        (["alertname=PredictionConfidenceDrop", "model_name=m"], "slack"),
        (["alertname=TrainingFailed"], "slack"),
    ],
)
def test_alertmanager_routes_rollbacks_to_the_receiver_and_everything_to_slack(
    labels: list[str], receivers: str
) -> None:
    result = _tool("amtool", "config", "routes", "test", "--config.file=alertmanager.yml", *labels)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receivers


def test_the_rollback_receiver_is_the_webhook_with_a_token_from_a_file() -> None:
    config = _load(MONITORING / "alertmanager.yml")
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    (webhook,) = receivers["visionops-rollback"]["webhook_configs"]
    assert webhook["url"] == "http://127.0.0.1:9095/alerts"
    assert webhook["http_config"]["authorization"]["credentials_file"] == "secrets/alerts_token"
    (slack,) = receivers["slack"]["slack_configs"]
    assert slack["api_url_file"] == "secrets/slack_webhook_url"
    assert "api_url" not in slack and "slack_api_url" not in config["global"]


@needs_amtool
def test_slack_template_renders() -> None:
    for name in ("title", "text", "color"):
        result = _tool(
            "amtool",
            "template",
            "render",
            "--template.glob=templates/*.tmpl",
            f'--template.text={{{{ template "visionops.slack.{name}" . }}}}',
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip(), name


# --- Grafana ------------------------------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        if panel["type"] == "row":
            yield from _panels(panel.get("panels", []))
        else:
            yield panel


def _queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable of a dashboard."""
    for panel in _panels(board["panels"]):
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            # label_values(selector, label): the selector is the PromQL.
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert selector, f"variable {variable['name']}: {query}"
            yield f"variable {variable['name']}", selector.group(1)


def test_the_three_dashboards_exist_with_distinct_uids() -> None:
    boards = [json.loads(path.read_text()) for path in DASHBOARDS]
    assert [path.stem for path in DASHBOARDS] == ["serving", "training", "tuning"]
    assert len({board["uid"] for board in boards}) == len(boards)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_panels_use_the_provisioned_datasource(path: Path) -> None:
    board = json.loads(path.read_text())
    panels = list(_panels(board["panels"]))
    assert panels
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE_UID, panel["title"]
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] == DATASOURCE_UID, variable["name"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboards_read_only_exported_metrics(path: Path) -> None:
    board = json.loads(path.read_text())
    unknown = {where: unknown_metrics(expr) for where, expr in _queries(board)}
    assert not {where: names for where, names in unknown.items() if names}
    # Every query reads some visionops metric (a typo in a prefix would escape the check).
    assert all(metric_references(expr) for _, expr in _queries(board))


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses expressions in rule files: one rule per query, Grafana's variables filled.
    rules = []
    for path in DASHBOARDS:
        for where, expr in _queries(json.loads(path.read_text())):
            filled = expr.replace("$__rate_interval", "5m")
            filled = re.sub(r"\$\w+", ".*", filled)
            rules.append({"record": f"dashboard_query_{len(rules)}", "expr": filled})
            rules[-1]["labels"] = {"where": f"{path.name} {where}"}
    rule_file = tmp_path / "dashboards.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = _tool("promtool", "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_loads_the_dashboards_and_the_datasource() -> None:
    provisioning = MONITORING / "grafana" / "provisioning"
    (datasource,) = _load(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["uid"] == DATASOURCE_UID and datasource["type"] == "prometheus"
    assert datasource["url"] == "http://127.0.0.1:9090"
    (provider,) = _load(provisioning / "dashboards" / "visionops.yml")["providers"]
    grafana = _compose()["services"]["grafana"]
    mounts = dict(_mounts(grafana))
    assert mounts[provider["options"]["path"]] == MONITORING / "grafana" / "dashboards"
    assert mounts["/etc/grafana/provisioning"] == provisioning


# --- deploy/compose and the system packages -----------------------------------------------------


def _compose() -> dict[str, Any]:
    return _load(COMPOSE_DIR / "docker-compose.yml")


def _mounts(service: dict[str, Any]) -> Iterator[tuple[str, Path]]:
    """(container path, host path) of a service's bind mounts."""
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            yield target, (COMPOSE_DIR / source).resolve()


def _debian_version(*command: str) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    output = result.stdout + result.stderr  # some print it on stderr
    match = re.search(r"version (\d+\.\d+\.\d+)", output)
    assert match, output
    return match.group(1)


def test_compose_runs_the_monitoring_stack_on_the_tested_versions() -> None:
    services = _compose()["services"]
    tested = {
        "prometheus": ("promtool", "--version"),
        "alertmanager": ("amtool", "--version"),
        "pushgateway": ("prometheus-pushgateway", "--version"),
    }
    for name in MONITORING_SERVICES:
        service = services[name]
        assert service["profiles"] == ["monitoring"], name
        assert service["network_mode"] == "host", name  # the configs' 127.0.0.1 addresses
        tag = service["image"].rpartition(":")[2]
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin a release, not {tag!r}"
        for target, source in _mounts(service):
            assert source.exists(), f"{name} mounts {source}, which does not exist ({target})"
        if name in tested and (version := _debian_version(*tested[name])) is not None:
            assert tag.removeprefix("v") == version, f"{name}: the tests run {version}"


def test_compose_alertmanager_finds_its_secrets_where_the_config_names_them() -> None:
    alertmanager = _compose()["services"]["alertmanager"]
    config = _load(MONITORING / "alertmanager.yml")
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    named = {
        receivers["visionops-rollback"]["webhook_configs"][0]["http_config"]["authorization"][
            "credentials_file"
        ],
        receivers["slack"]["slack_configs"][0]["api_url_file"],
    }
    workdir = alertmanager["working_dir"]
    assert "--config.file=" + workdir + "/alertmanager.yml" in alertmanager["command"]
    assert {secret["target"] for secret in alertmanager["secrets"]} == {
        f"{workdir}/{path}" for path in named
    }
    prometheus = _compose()["services"]["prometheus"]
    mounts = dict(_mounts(prometheus))
    assert mounts["/etc/visionops/monitoring/prometheus.yml"] == MONITORING / "prometheus.yml"
    assert mounts["/etc/visionops/monitoring/rules"] == MONITORING / "rules"


# --- the secret files: nothing else reports a missing one before an alert is sent ------------

CHECK_SECRETS = ROOT / "scripts" / "deploy" / "check-secrets.sh"


def _check_secrets(*configs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHECK_SECRETS), *map(str, configs)], capture_output=True, text=True, timeout=30
    )


def _secret_files(config: Path) -> set[str]:
    """The secret files a config names, read as YAML (the script reads them with sed)."""
    found: set[str] = set()
    pending = [_load(config)]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending += node
        elif isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and (key == "file" or key.endswith("_file")):
                    found.add(value.removeprefix("./"))
                else:
                    pending.append(value)
    return found


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (MONITORING / "alertmanager.yml", {"secrets/alerts_token", "secrets/slack_webhook_url"}),
        (
            COMPOSE_DIR / "docker-compose.yml",
            {f"secrets/{name}" for name in ("postgres_password", "admin_password")}
            | {f"secrets/{name}" for name in ("flask_secret_key", "alerts_token")}
            | {"secrets/slack_webhook_url", "secrets/grafana_admin_password"},
        ),
    ],
    ids=["alertmanager", "compose"],
)
def test_secrets_check_reports_each_missing_or_empty_file(
    tmp_path: Path, config: Path, expected: set[str]
) -> None:
    assert _secret_files(config) == expected
    copy = tmp_path / config.name
    copy.write_text(config.read_text())
    (tmp_path / "secrets").mkdir()
    first, *others = sorted(expected)
    (tmp_path / first).write_text("")  # empty: as useless as missing

    result = _check_secrets(copy)
    assert result.returncode == 1, result
    assert f"{copy}: empty secret file {tmp_path / first}" in result.stderr
    for name in others:
        assert f"{copy}: missing secret file {tmp_path / name}" in result.stderr
    assert f"{len(expected)} secret file(s) missing or empty" in result.stderr

    for name in expected:
        (tmp_path / name).write_text("not-a-real-secret\n")
    result = _check_secrets(copy)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{copy}: all {len(expected)} secret files present\n"


def test_secrets_check_is_documented_and_a_make_target() -> None:
    assert "scripts/deploy/check-secrets.sh" in (ROOT / "Makefile").read_text()
    for doc in (ROOT / "docs" / "monitoring.md", COMPOSE_DIR / "README.md"):
        assert "secrets-check" in doc.read_text(), doc


def test_the_setup_script_installs_the_monitoring_packages() -> None:
    script = (ROOT / "scripts" / "install-system-packages.sh").read_text()
    packages = re.search(r"PACKAGES=\((.*?)\)", script, re.DOTALL)
    assert packages
    assert {"prometheus", "prometheus-alertmanager", "prometheus-pushgateway"} <= set(
        packages.group(1).split()
    )
