"""shellcheck on every shell script of the repository, tracked or new.

The scripts are found the way git sees the work tree (``git ls-files`` of ``*.sh``, tracked and
untracked but not ignored), so a new script is checked without being listed anywhere. One
``shellcheck -x`` run reads them all (following ``source`` into scripts/lib/common.sh), and
each script is its own test case holding only that file's findings.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache

import pytest
from deploy_tools import ROOT, run_tool


def shell_scripts() -> list[str]:
    """Every *.sh of the work tree git does not ignore, relative to ROOT."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "*.sh"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        # Not a git checkout (an sdist, say): every *.sh outside the tool and virtualenv folders.
        skipped = {".git", ".tools", ".venv", ".venv-airflow", "node_modules"}
        return sorted(
            str(path.relative_to(ROOT))
            for path in ROOT.rglob("*.sh")
            if not skipped & set(path.relative_to(ROOT).parts)
        )
    return sorted({name for name in listed.split("\0") if name and (ROOT / name).is_file()})


SCRIPTS = shell_scripts()


@cache
def findings() -> dict[str, list[dict]]:
    """shellcheck's comments on SCRIPTS, by file (one run for all of them)."""
    result = run_tool("shellcheck", "-x", "--format=json1", *SCRIPTS, cwd=ROOT)
    # 0: clean, 1: findings; anything else means shellcheck itself failed.
    assert result.returncode in (0, 1), result.output
    by_file: dict[str, list[dict]] = {}
    for comment in json.loads(result.stdout)["comments"]:
        # A file reached through `source` is named by the path shellcheck resolved.
        name = os.path.normpath(comment["file"])
        by_file.setdefault(name, []).append(comment)
    return by_file


def test_the_scripts_are_found() -> None:
    for expected in (
        "scripts/lib/common.sh",
        "scripts/setup/01-setup-aws.sh",
        "scripts/setup/create-users.sh",
        "scripts/ops/scale-mlflow.sh",
        "deploy/docker/server-entrypoint.sh",
    ):
        assert expected in SCRIPTS, f"{expected} is not among the scripts found: {SCRIPTS}"
    assert not [name for name in SCRIPTS if name.startswith((".tools/", ".venv"))]


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck_is_clean(script: str) -> None:
    comments = findings().get(script, [])
    assert not comments, f"shellcheck -x {script}:\n" + "\n".join(
        f"  {script}:{c['line']}:{c['column']}: {c['level']} SC{c['code']}: {c['message']}"
        for c in comments
    )


def test_no_findings_in_sourced_files_outside_the_list() -> None:
    outside = {name: len(comments) for name, comments in findings().items() if name not in SCRIPTS}
    assert not outside, f"shellcheck found problems in files the list lacks: {outside}"
