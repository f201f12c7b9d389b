"""The locked environments of scripts/lock.py (make lock), against what is installed.

requirements.lock is .venv less the torch build; the pair of constraints.txt and the CUDA
packages of constraints-cuda.txt are that build. The other virtualenvs (.venv-airflow, .tools,
.venv-lightning) are checked against their constraints files where make has built them. Whether
a re-resolve would change a file needs the package index: that is `make lock-check`.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "visionops_lock_script", REPO / "scripts" / "lock.py"
)
assert _spec and _spec.loader
lock = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = lock  # its dataclasses look their module up there
_spec.loader.exec_module(lock)

#: Not part of any environment: the installer, and the checkout installed in it.
NOT_LOCKED = {"pip", "visionops"}


def file_pins(name: str) -> dict[str, str]:
    return lock.pins((REPO / name).read_text())


def installed(python: Path | str = sys.executable) -> dict[str, str]:
    """{canonical name: version} of every distribution of a virtualenv, by its interpreter."""
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {lock.canonical(name): version for name, version in json.loads(out).items()}


def public(version: str) -> str:
    """The version less its local label: the +cpu wheels are the pair's CPU build."""
    return version.split("+")[0]


def test_every_package_of_the_virtualenv_is_locked_at_its_version() -> None:
    shared, pair, cuda = (file_pins(n) for n in (lock.LOCK, lock.TORCH_PAIR, lock.CUDA))
    wrong = {}
    for name, version in installed().items():
        if name in NOT_LOCKED:
            continue
        if name in pair:
            expected = pair[name]
            version = public(version)
        elif lock.TORCH_BUILD.match(name):
            expected = cuda.get(name)
        else:
            expected = shared.get(name)
        if version != expected:
            wrong[name] = f"{version} installed, {expected or 'not'} locked"
    assert not wrong, f"{sys.prefix} differs from the lock (make install; make lock): {wrong}"


def test_the_lock_is_hashed_and_leaves_out_the_torch_build() -> None:
    text = (REPO / lock.LOCK).read_text()
    blocks = lock.blocks(text)
    assert len(blocks) > 150
    for name, lines in blocks:
        assert not lock.TORCH_BUILD.match(name), f"{name}: the torch build is not shared"
        assert "--hash=sha256:" in lines, f"{name} has no hash"
    assert {"mlflow", "ray", "boto3", "pytest", "setuptools"} <= set(file_pins(lock.LOCK))
    assert set(file_pins(lock.TORCH_PAIR)) == {"torch", "torchvision"}
    cuda = file_pins(lock.CUDA)
    assert cuda and all(lock.TORCH_BUILD.match(name) for name in cuda)
    assert not set(cuda) & {"torch", "torchvision"}


def test_lightning_shares_the_versions_of_the_lock() -> None:
    lightning = file_pins("constraints-lightning.txt")
    locked = file_pins(lock.LOCK) | file_pins(lock.TORCH_PAIR) | file_pins(lock.CUDA)
    differ = {n: (v, locked[n]) for n, v in lightning.items() if n in locked and locked[n] != v}
    assert not differ, f"constraints-lightning.txt against the lock: {differ}"


@pytest.mark.parametrize(
    ("constraints", "pythons"),
    [
        ("constraints-airflow.txt", [".venv-airflow/bin/python"]),
        ("constraints-deploy.txt", [".tools/venv/bin/python", ".tools/hcl2/bin/python"]),
        ("constraints-lightning.txt", [".venv-lightning/bin/python"]),
    ],
)
def test_other_virtualenvs_hold_the_versions_of_their_constraints(
    constraints: str, pythons: list[str]
) -> None:
    present = [REPO / python for python in pythons if (REPO / python).exists()]
    if not present:
        pytest.skip(f"{pythons[0]} is not built (make builds it)")
    pinned = file_pins(constraints)
    for python in present:
        packages = installed(python)
        wrong = {
            name: f"{version} installed, {pinned.get(name, 'not')} pinned"
            for name, version in packages.items()
            if name not in NOT_LOCKED | {"setuptools", "wheel"} and pinned.get(name) != version
        }
        assert not wrong, f"{python.parent.parent} against {constraints}: {wrong}"
