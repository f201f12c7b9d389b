"""The images of deploy/docker: hadolint, and what each must be to run on the cluster.

No Docker engine runs where the tests do, so the Dockerfiles are checked as files: hadolint on
each, then their instructions (base tags, the user, the healthcheck, what pip installs and at
which versions), the build context .dockerignore leaves, and the compose service that builds the
tracking server. Every Dockerfile in deploy/docker is checked by every parametrised test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from deploy_tools import DEPLOY, ROOT, run_tool

from visionops import __version__

DOCKER = DEPLOY / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
#: pyproject's license expression, which the images' labels repeat.
LICENSE = re.search(r'^license = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
#: What each image runs: its ENTRYPOINT.
ENTRYPOINTS = {
    "train": ["visionops"],
    "server": ["/usr/local/bin/server-entrypoint.sh"],
    "serve": ["visionops", "serve", "--host", "0.0.0.0", "--port", "8080"],
}
#: The user every image runs as (the Kubernetes charts' runAsUser).
UID = "10001"
#: The locked environment, and the torch pair installed before it (docs/development.md).
LOCK = ROOT / "requirements.lock"
TORCH_PAIR = ROOT / "constraints.txt"
#: What the images pass to pip's -c: the lock's versions without its hashes.
LOCK_PINS = "lock-pins.txt"


# --- a Dockerfile as its instructions, by stage -----------------------------------------------


@dataclass
class Stage:
    base: str  # the FROM image, build arguments resolved to their defaults
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def image(self) -> str:
        return self.path.name.removesuffix(".Dockerfile")

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def runs(self) -> list[str]:
        return [run for stage in self.stages for run in stage.all("RUN")]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) with continuation lines joined and comment lines dropped."""
    instructions, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not current):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        keyword, _, args = current.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        current = ""
    return instructions


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, args in _instructions(path.read_text()):
        if keyword == "FROM":
            words = [word for word in args.split() if not word.startswith("--")]
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else None
            stages.append(Stage(_substitute(words[0], global_args), name))
        elif not stages:
            assert keyword == "ARG", f"{path.name}: only ARG may come before FROM"
            arg, _, default = args.partition("=")
            global_args[arg] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return Dockerfile(path, global_args, stages)


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not the exec (JSON) form: {args}"
    return value


def _pip_installs(dockerfile: Dockerfile) -> list[list[str]]:
    """The arguments of every ``pip install`` the Dockerfile runs."""
    installs = []
    for run in dockerfile.runs():
        for command in re.split(r"&&|;|\|\|", run):
            words = shlex.split(command)
            for i, word in enumerate(words):
                if word.endswith("pip") and words[i + 1 : i + 2] == ["install"]:
                    installs.append(words[i + 2 :])
    return installs


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requested(dockerfile: Dockerfile) -> dict[str, str | None]:
    """{distribution: the version written beside it, or None} of every package pip installs
    by name (not from a file, not the checkout)."""
    requested: dict[str, str | None] = {}
    for install in _pip_installs(dockerfile):
        for previous, word in zip(["", *install[:-1]], install, strict=True):
            if word.startswith("-") or previous in ("-c", "-r", "--index-url") or word == ".":
                continue
            match = re.fullmatch(r"([A-Za-z0-9._-]+)(?:\[[\w,-]+\])?(?:==([\w.+!-]+))?", word)
            assert match, f"{dockerfile.path.name}: cannot read the requirement {word!r}"
            requested[canonical(match.group(1))] = match.group(2)
    return requested


def file_pins(text: str) -> dict[str, str]:
    """{distribution: version} of a requirements or constraints file."""
    pattern = r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)"
    return {canonical(name): version for name, version in re.findall(pattern, text, re.M)}


@pytest.fixture(params=DOCKERFILES, ids=[path.name for path in DOCKERFILES])
def dockerfile(request: pytest.FixtureRequest) -> Dockerfile:
    return parse(request.param)


def test_every_image_has_a_dockerfile() -> None:
    assert {parse(path).image for path in DOCKERFILES} >= set(ENTRYPOINTS)


@pytest.mark.parametrize("path", DOCKERFILES, ids=[path.name for path in DOCKERFILES])
def test_hadolint_passes(path: Path) -> None:
    # From the root, so that a .hadolint.yaml there applies; info findings fail too.
    result = run_tool("hadolint", "--no-color", str(path.relative_to(ROOT)))
    assert result.returncode == 0, result.output


def test_image_pins_its_bases_by_tag(dockerfile: Dockerfile) -> None:
    for index, stage in enumerate(dockerfile.stages):
        if stage.base in {earlier.name for earlier in dockerfile.stages[:index]}:
            continue  # FROM an earlier stage of the same file
        assert "$" not in stage.base, f"{stage.base}: a build argument without a default"
        repository, _, tag = stage.base.split("@")[0].rpartition(":")
        if "/" in tag:  # that colon was a registry's port: no tag at all
            repository, tag = stage.base, ""
        assert repository and tag, f"{stage.base}: pin the base by tag"
        assert tag != "latest", f"{stage.base}: pin a release, not latest"


def test_image_runs_as_the_non_root_user(dockerfile: Dockerfile) -> None:
    users = dockerfile.final.all("USER")
    assert users, f"{dockerfile.path.name}: the final stage sets no USER"
    assert users[-1].split(":") == [UID, UID], "numeric, so Kubernetes can check runAsNonRoot"
    created = " ".join(dockerfile.final.all("RUN"))
    assert f"useradd --create-home --uid {UID} --gid {UID}" in created
    assert f"groupadd --gid {UID}" in created


def test_image_has_a_healthcheck(dockerfile: Dockerfile) -> None:
    (healthcheck,) = dockerfile.final.all("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert command, f"{dockerfile.path.name}: HEALTHCHECK {healthcheck}"
    assert _exec_form(command)[0] == "python"
    assert re.search(r"--interval=\d+[sm]", options) and re.search(r"--timeout=\d+s", options)
    if dockerfile.image in ("server", "serve"):
        (port,) = dockerfile.final.all("EXPOSE")
        # The probe asks the port the image exposes, on the path its server answers.
        path = {"server": "/health", "serve": "/v2/health/live"}[dockerfile.image]
        assert f"http://127.0.0.1:{port}{path}" in command


def test_image_installs_with_the_constraints_and_no_cache(dockerfile: Dockerfile) -> None:
    installs = _pip_installs(dockerfile)
    assert installs
    for install in installs:
        assert "--no-cache-dir" in install, install
        # -r for the torch pair from PyTorch's index, the lock's versions for everything else.
        if "-r" in install:
            assert install[install.index("-r") + 1] == "constraints.txt", install
        else:
            assert install[install.index("-c") - 1 :].count(LOCK_PINS), install
    copied = [args.split() for stage in dockerfile.stages for args in stage.all("COPY")]
    assert any("requirements.lock" in args[:-1] for args in copied)


def test_image_pins_the_versions_the_tests_run(dockerfile: Dockerfile, tmp_path: Path) -> None:
    """Every package an image names is pinned by requirements.lock (or is the torch pair), at
    the lock's version where the Dockerfile writes one too."""
    lock, pair = file_pins(LOCK.read_text()), file_pins(TORCH_PAIR.read_text())
    for name, version in _requested(dockerfile).items():
        assert name in lock or name in pair, f"{dockerfile.path.name} installs {name}, unlocked"
        locked = lock.get(name) or pair[name]
        assert version in (None, locked), (
            f"{dockerfile.path.name} pins {name}=={version}; requirements.lock has {locked}"
        )
    for install in _pip_installs(dockerfile):
        if "--index-url" in install:  # only torch's own index, with the pair of constraints.txt
            assert install[install.index("--index-url") + 1] == "${TORCH_INDEX_URL}"
            assert install[install.index("-r") + 1] == "constraints.txt"
            assert "--no-deps" in install  # that index holds few versions of torch's requirements
    # The image makes lock-pins.txt with this command: it must give the lock's versions, and
    # no hash (pip refuses them in a -c file).
    (derive,) = [
        command.strip()
        for run in dockerfile.runs()
        for command in run.split("&&")
        if f"> {LOCK_PINS}" in command
    ]
    (tmp_path / LOCK.name).write_bytes(LOCK.read_bytes())
    subprocess.run(["sh", "-c", derive], cwd=tmp_path, check=True, timeout=30)
    derived = (tmp_path / LOCK_PINS).read_text()
    assert file_pins(derived) == lock
    assert "--hash" not in derived and "\\" not in derived


def test_image_labels_and_entrypoint(dockerfile: Dockerfile) -> None:
    label_args = " ".join(dockerfile.final.all("LABEL"))
    pairs = re.findall(r'(\S+)=("[^"]*"|\S+)', label_args)
    labels = {key: value.strip('"') for key, value in pairs}
    assert labels["org.opencontainers.image.title"] == f"visionops/{dockerfile.image}"
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.licenses"] == LICENSE
    (entrypoint,) = dockerfile.final.all("ENTRYPOINT")
    assert _exec_form(entrypoint) == ENTRYPOINTS[dockerfile.image]


def test_train_image_takes_its_base_and_torch_index_as_build_arguments() -> None:
    train = parse(DOCKER / "train.Dockerfile")
    assert train.global_args["BASE_IMAGE"] == "python:3.11-slim-bookworm"
    text = train.path.read_text()
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS base$", text, re.MULTILINE)
    # Build and runtime stages share the base, so the copied virtualenv finds its interpreter.
    assert [stage.base for stage in train.stages] == ["python:3.11-slim-bookworm", "base", "base"]
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert "ray" in _requested(train)  # with [default]: the dashboard KubeRay's head needs
    assert '"ray[default]"' in text
    # visionops from the checkout, with its dependencies.
    (own,) = [install for install in _pip_installs(train) if "." in install]
    assert "--no-deps" not in own


def test_serve_image_carries_the_serving_runtime_only() -> None:
    serve = parse(DOCKER / "serve.Dockerfile")
    requested = _requested(serve)
    assert {"onnxruntime", "mlflow-skinny", "fastapi", "uvicorn"} <= set(requested)
    assert not {"ray", "openvino", "nncf", "optuna", "mlflow", "pytest"} & set(requested)
    (own,) = [install for install in _pip_installs(serve) if "." in install]
    assert "--no-deps" in own  # pyproject's dependencies are the whole platform's
    (port,) = serve.final.all("EXPOSE")
    assert port == "8080"


# --- the build context ---------------------------------------------------------------------------


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as moby/patternmatcher compiles it (``**`` spans folders)."""
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern[i : i + 1] == "/":
                i += 1
            out += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if char == "[" and "]" in pattern[i:]:  # a character class, as filepath.Match has
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        i += 1
    return re.compile(f"^{out}$")


def build_context_includes(path: str) -> bool:
    """Whether ``docker build`` with the repository root as context sends ``path``."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        rules.append((negated, _dockerignore_regex(pattern)))
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for negated, regex in rules:  # the last rule that matches the path or a parent wins
        if any(regex.match(prefix) for prefix in prefixes):
            included = negated
    return included


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".venv-airflow/bin/airflow",
        ".tools/bin/hadolint",
        ".git/HEAD",
        "outputs/debug/checkpoint.pt",
        "mlruns/0/meta.yaml",
        "mlflow.db",
        "data/cifar10/data_batch_1",
        ".env",
        "deploy/compose/.env",
        "deploy/compose/secrets/admin_password",
        "tests/conftest.py",
        "src/visionops/__pycache__/cli.cpython-311.pyc",
        "src/visionops/stray.pyc",
        "src/visionops.egg-info/PKG-INFO",
        ".pytest_cache/README.md",
        ".ruff_cache/CACHEDIR.TAG",
    ],
)
def test_build_context_leaves_out(path: str) -> None:
    assert not build_context_includes(path)


def test_build_context_holds_what_the_dockerfiles_copy() -> None:
    sources = set()
    for path in DOCKERFILES:
        for stage in parse(path).stages:
            for args in stage.all("COPY"):
                words = [word for word in args.split() if not word.startswith("--")]
                if "--from=" not in args:
                    sources.update(words[:-1])
    assert sources >= {"constraints.txt", "requirements.lock", "pyproject.toml", "README.md", "src"}
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *sources],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "deploy/docker/server-entrypoint.sh" in tracked
    for source in sources:
        assert (ROOT / source).exists(), f"a Dockerfile copies {source}, which does not exist"
    for path in tracked:
        assert build_context_includes(path), f".dockerignore leaves out {path}, which is copied"


# --- the server image in deploy/compose ---------------------------------------------------------


def test_compose_builds_the_server_image() -> None:
    compose_file = DEPLOY / "compose" / "docker-compose.yml"
    service = yaml.safe_load(compose_file.read_text())["services"]["mlflow"]
    context = (compose_file.parent / service["build"]["context"]).resolve()
    assert context == ROOT
    assert context / service["build"]["dockerfile"] == DOCKER / "server.Dockerfile"
    assert service["image"] == f"visionops/server:{__version__}"


def _server_entrypoint(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    probe = 'printf "%s|%s" "${PGPASSWORD-unset}" "${MLFLOW_FLASK_SERVER_SECRET_KEY-unset}"'
    return subprocess.run(
        ["sh", str(DOCKER / "server-entrypoint.sh"), "sh", "-c", probe],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_server_entrypoint_refuses_to_start_without_an_auth_config(tmp_path: Path) -> None:
    # Else MLflow would write its built-in config, whose admin password everyone knows.
    for env in ({}, {"MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "missing.ini")}):
        result = _server_entrypoint(env)
        assert result.returncode == 1, result
        assert "ADMIN_PASSWORD_FILE" in result.stderr
        assert result.stdout == ""


def test_server_entrypoint_keeps_a_given_auth_config_and_environment(tmp_path: Path) -> None:
    """Secrets given as variables (a Kubernetes Secret in env) pass through untouched."""
    config = tmp_path / "basic_auth.ini"
    config.write_text("[mlflow]\nadmin_username = admin\n")
    result = _server_entrypoint(
        {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "from-env"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "unset|from-env"
    assert config.read_text() == "[mlflow]\nadmin_username = admin\n"
