"""The validators of ``make deploy-check``, installed in .tools/ by scripts/install-deploy-tools.sh.

    result = run_tool("helm", "lint", "--strict", str(chart))
    assert result.returncode == 0, result.output

Tests import this module by its own name (``from deploy_tools import ...``). Where .tools/ is
missing (pytest run without make) the tests that need a tool are skipped, naming the target.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "bin"
DEPLOY = ROOT / "deploy"
TOOLS = (
    "helm",
    "kubectl",
    "kubernetes-validate",
    "checkov",
    "hadolint",
    "shellcheck",
    "actionlint",
)
#: The Kubernetes version the manifests are validated against (kubernetes-validate's schemas).
KUBERNETES_VERSION = "1.33.0"


@dataclass(frozen=True)
class ToolResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"{self.stdout}\n{self.stderr}".strip()


def tool_path(name: str) -> Path:
    """The installed tool ``name``; skips the test when .tools/ lacks it."""
    assert name in TOOLS, f"{name} is not one of the deploy tools: {', '.join(TOOLS)}"
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed in .tools/bin: run `make deploy-tools`")
    return path


def run_tool(
    name: str, *args: str, cwd: Path = ROOT, timeout: float = 300, stdin: str | None = None
) -> ToolResult:
    """Run tool ``name`` with ``args``; the result whatever its exit code."""
    env = {**os.environ, "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    completed = subprocess.run(
        [str(tool_path(name)), *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return ToolResult(completed.returncode, completed.stdout, completed.stderr)


def helm_template(chart: Path, *values_files: Path, release: str = "visionops") -> list[dict]:
    """The documents ``helm template`` renders for ``chart`` with ``values_files`` (in order);
    fails the test with helm's output when it cannot render."""
    import yaml

    args = ["template", release, str(chart), "--namespace", "visionops"]
    for values in values_files:
        args += ["--values", str(values)]
    result = run_tool("helm", *args)
    assert result.returncode == 0, result.output
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
