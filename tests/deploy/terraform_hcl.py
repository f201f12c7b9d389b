"""Reads Terraform files for tests/deploy, through python-hcl2 in the deploy tools' virtualenv.

    stack = Stack.load(parse(sorted(folder.glob("*.tf"))))
    group = stack.resource("aws_eks_node_group", "gpu")
    stack.value(group, "capacity_type")  # "SPOT"; a bare var.NAME gives that variable's default

python-hcl2 lives in .tools/hcl2 (scripts/install-deploy-tools.sh), not in the project's .venv,
so the files are parsed in a subprocess there and come back as JSON.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deploy_tools import ROOT

HCL_PYTHON = ROOT / ".tools" / "hcl2" / "bin" / "python"

# Runs in .tools/hcl2: parses each file named on the command line and prints them as JSON.
# python-hcl2 (>= 5) keeps string values quoted and marks blocks with "__is_block__"; the reader
# below unquotes them.
_PARSE = r"""
import json, sys
import hcl2

files, errors = {}, {}
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            files[path] = hcl2.load(f)
    except Exception as exc:
        errors[path] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"files": files, "errors": errors}))
"""

INTERPOLATION = re.compile(r"^\$\{(.*)\}$", re.DOTALL)
VAR_REF = re.compile(r"^\$\{var\.([a-z0-9_]+)\}$")


@dataclass(frozen=True)
class Hcl:
    """Reads python-hcl2's output (see _PARSE)."""

    def unquote(self, value: Any) -> Any:
        if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
            return value[1:-1].replace('\\"', '"')
        if isinstance(value, list):
            return [self.unquote(v) for v in value]
        if isinstance(value, dict):
            return {
                self.unquote(k): self.unquote(v) for k, v in value.items() if k != "__is_block__"
            }
        return value

    def attr(self, body: dict, key: str, default: Any = KeyError) -> Any:
        """The value of attribute ``key`` of a block ``body``."""
        if key not in body:
            if default is KeyError:
                raise KeyError(f"no attribute {key!r} in {sorted(body)}")
            return default
        return self.unquote(body[key])

    def expression(self, body: dict, key: str) -> str | None:
        """The expression text of attribute ``key``; None when it is a quoted string."""
        raw = body[key]
        match = INTERPOLATION.match(raw)
        return None if raw.startswith('"') else match.group(1) if match else raw

    def blocks(self, body: dict, key: str) -> list[dict]:
        """The nested blocks of type ``key`` in ``body`` (none: an empty list)."""
        return list(body.get(key, []))


@dataclass
class Stack:
    """The parsed Terraform folder, keyed by block labels."""

    hcl: Hcl
    files: dict[str, dict]

    @classmethod
    def load(cls, parsed: dict) -> Stack:
        """The stack of the .tf files in ``parse``'s result, which must hold no error."""
        assert not parsed["errors"], parsed["errors"]
        files = {Path(p).name: body for p, body in parsed["files"].items() if p.endswith(".tf")}
        return cls(Hcl(), files)

    def _top(self, kind: str) -> Iterator[tuple[str, dict]]:
        for parsed in self.files.values():
            for entry in parsed.get(kind, []):
                for label, body in entry.items():
                    yield self.hcl.unquote(label), body

    @property
    def variables(self) -> dict[str, dict]:
        return dict(self._top("variable"))

    @property
    def outputs(self) -> dict[str, dict]:
        return dict(self._top("output"))

    def resources(self, kind: str = "resource") -> dict[tuple[str, str], dict]:
        found = {}
        for rtype, named in self._top(kind):
            for name, body in named.items():
                found[(rtype, self.hcl.unquote(name))] = body
        return found

    def resource(self, rtype: str, name: str) -> dict:
        return self.resources()[(rtype, name)]

    def data(self, dtype: str, name: str) -> dict:
        return self.resources("data")[(dtype, name)]

    @property
    def locals(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for parsed in self.files.values():
            for block in parsed.get("locals", []):
                merged.update({k: self.hcl.attr(block, k) for k in block if not k.startswith("__")})
        return merged

    def default(self, variable: str) -> Any:
        return self.hcl.attr(self.variables[variable], "default")

    def value(self, body: dict, key: str) -> Any:
        """Attribute ``key`` with a bare ``var.NAME`` replaced by that variable's default."""
        return self.resolve(self.hcl.attr(body, key))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, str) and (match := VAR_REF.match(value)):
            return self.default(match.group(1))
        return value


def parse(paths: list[Path]) -> dict:
    """``{"files": {path: parsed}, "errors": {path: message}}`` for the HCL ``paths``;
    skips the test when the deploy tools are not installed."""
    if not HCL_PYTHON.exists():
        pytest.skip(
            f"python-hcl2 is not installed in {HCL_PYTHON.parent.parent}: run `make deploy-tools`"
        )
    completed = subprocess.run(
        [str(HCL_PYTHON), "-c", _PARSE, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)
