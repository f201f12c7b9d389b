"""Shared fixtures: an isolated MLflow store per test and a tiny, fast training config."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from visionops import env
from visionops.config import TrainConfig, with_fields

#: The caller's settings that would change what the tests do (a remote registry, an S3
#: endpoint, a Ray address). Cleared once here, before any fixture runs, so that session- and
#: module-scoped fixtures are as clean as each test (``_isolated_environment`` clears the
#: first two again per test, after a test's own changes).
CALLER_SETTINGS = ("MLFLOW_", "VISIONOPS_", "AWS_", "RAY_")
for _name in [name for name in os.environ if name.startswith(CALLER_SETTINGS)]:
    del os.environ[_name]

#: Each pytest-xdist worker's share of the cores, for torch's thread pool and those of the
#: processes it starts (set before anything imports torch, which reads it once). Two workers
#: of one thread per core each would oversubscribe the machine: OpenMP's threads spin while
#: they wait, so the pools of both slow each other down.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _WORKERS))

# Ray reads it once, when a test module first imports Ray: the tests' local Rays stay on
# 127.0.0.1 as the CLI's do, whatever the caller's environment says.
os.environ[env.RAY_ENABLE_CLUSTER.name] = "0"

#: Folders whose tests start servers or several processes: marked ``integration`` as a whole,
#: so ``make test-fast`` (``-m "not integration and not slow"``) leaves them out.
_INTEGRATION_FOLDERS = (
    "integration",
    "server",
    "dags",
    "distributed",
    "deploy",
    "benchmarks",
    "monitoring",
    "scripts",
)
#: Fixtures that start a process or a server (or build on one that does): a test using one
#: is ``integration`` wherever it lives. The optimisation tests' model (``trained_source``) is
#: here because what they do with it compiles with inductor, whose compile workers are
#: processes.
_PROCESS_FIXTURES = frozenset(
    {
        "start_server",
        "serve_url",
        "shared_stack",
        "stack_factory",
        "airflow",
        "gateway",
        "trained_source",
    }
)
#: Session fixtures that cost a training run or a server to build: the tests using one share
#: an xdist group, so that one worker builds it (``--dist loadgroup``) instead of each.
_SHARED_FIXTURES = ("served_registry", "shared_stack", "trained_source", "airflow")
#: What a unit test may still start: MLflow asks git for the source version of a run,
#: ctypes.util.find_library (native libraries finding theirs) asks ldconfig, and
#: platform.uname() asks uname for the processor.
_ALLOWED_PROGRAMS = frozenset({"git", "ldconfig", "uname"})


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With ``-m "not integration ..."`` (make test-fast) the integration folders are not even
    imported: importing their modules (Ray, servers, Airflow helpers) is most of collecting."""
    tests = Path(__file__).parent
    if "not integration" not in " ".join(config.option.markexpr.split()):
        return None
    try:
        folder = collection_path.relative_to(tests).parts[0]
    except (ValueError, IndexError):
        return None
    return True if folder in _INTEGRATION_FOLDERS else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    groups: dict[Path, str] = {}  # module -> the shared fixture's group of one of its tests
    for item in items:
        folder = Path(item.fspath).relative_to(tests).parts[0]
        fixtures = set(getattr(item, "fixturenames", ()))
        if folder in _INTEGRATION_FOLDERS or fixtures & _PROCESS_FIXTURES:
            item.add_marker(pytest.mark.integration)
        shared = [name for name in _SHARED_FIXTURES if name in fixtures]
        if shared and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(shared[0]))
            groups.setdefault(item.path, shared[0])
    # A module-scoped fixture is built once per worker that runs a test using it: the tests of
    # a module that has one run on one worker (in its shared fixture's group, if it has one).
    for item in items:
        if item.get_closest_marker("xdist_group") is None and _uses_module_fixture(item):
            module = str(item.path.relative_to(tests))
            item.add_marker(pytest.mark.xdist_group(groups.get(item.path, module)))
    # Longest first, so that no worker is left with a long group while the other idles at the
    # end: the groups of a shared fixture (the team stack's alone takes minutes), then what
    # starts processes or trains, then the unit tests, hundreds of short ones that fill the
    # gaps. ``make test`` passes --no-loadscope-reorder, which keeps this order for xdist.
    items.sort(key=_cost_rank)


def _cost_rank(item: pytest.Item) -> int:
    group = item.get_closest_marker("xdist_group")
    if group is not None and group.args and group.args[0] in _SHARED_FIXTURES:
        return 0
    if item.get_closest_marker("integration") or item.get_closest_marker("slow"):
        return 1
    return 2


def _uses_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.values() if info is not None else ()
    return any(d.scope in ("module", "package", "class") for defs in definitions for d in defs)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test that starts a process must be marked ``integration`` (by its folder, a fixture
    of ``_PROCESS_FIXTURES`` or a mark): ``make test-fast`` promises to start none."""
    if request.node.get_closest_marker("integration") is not None:
        return
    original = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def refuse(self: subprocess.Popen[bytes], args: Any, *rest: Any, **kwargs: Any) -> Any:
        command = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        program = Path(os.fsdecode(command[0]).split()[0]).name
        if program not in _ALLOWED_PROGRAMS:
            raise AssertionError(
                f"{request.node.nodeid} starts {program!r}: mark it integration "
                "(tests/conftest.py: _INTEGRATION_FOLDERS, _PROCESS_FIXTURES)"
            )
        return original(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's MLflow/visionops settings or writes into the checkout."""
    for name in list(os.environ):
        if name.startswith(("VISIONOPS_", "MLFLOW_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VISIONOPS_PROGRESS", "plain")
    monkeypatch.setenv("VISIONOPS_CACHE_DIR", str(tmp_path / "dataset-cache"))
    monkeypatch.chdir(tmp_path)


NewStore = Callable[..., str]


@pytest.fixture(scope="session")
def new_tracking_store(tmp_path_factory: pytest.TempPathFactory) -> NewStore:
    """``new_tracking_store(folder)``: the URI of a new SQLite tracking store in ``folder``.

    Each is a copy of one store migrated once per session (as MLflow's own suite does):
    creating and migrating a store costs seconds of CPU, copying it milliseconds.
    """
    template: list[Path] = []

    def new(folder: Path, name: str = "mlflow.db") -> str:
        if not template:
            from mlflow.tracking import MlflowClient

            path = tmp_path_factory.mktemp("migrated-store") / "mlflow.db"
            MlflowClient(f"sqlite:///{path}").search_experiments()  # creates and migrates it
            template.append(path)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template[0], folder / name)
        return f"sqlite:///{folder / name}"

    return new


@pytest.fixture
def tracking_uri(tmp_path: Path, new_tracking_store: NewStore) -> str:
    return new_tracking_store(tmp_path)


@pytest.fixture
def tiny_config(tmp_path: Path, tracking_uri: str) -> TrainConfig:
    """A few seconds of training on generated data, tracked in this test's own store."""
    from visionops.recipes import get_recipe

    return with_fields(
        get_recipe("debug"),
        tracking_uri=tracking_uri,
        output_dir=str(tmp_path / "outputs"),
        experiment="tests",
    )
