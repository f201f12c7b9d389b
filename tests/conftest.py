"""Shared fixtures: an isolated MLflow store per test and a tiny, fast training config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from visionops import env
from visionops.config import TrainConfig, with_fields

# Ray reads it once, when a test module first imports Ray: the tests' local Rays stay on
# 127.0.0.1 as the CLI's do, whatever the caller's environment says.
os.environ[env.RAY_ENABLE_CLUSTER.name] = "0"

#: Folders whose tests start servers or several processes: marked ``integration`` as a whole,
#: so ``make test-fast`` (``-m "not integration and not slow"``) leaves them out.
_INTEGRATION_FOLDERS = ("integration", "server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        folder = Path(item.fspath).relative_to(tests).parts[0]
        if folder in _INTEGRATION_FOLDERS:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's MLflow/visionops settings or writes into the checkout."""
    for name in list(os.environ):
        if name.startswith(("VISIONOPS_", "MLFLOW_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VISIONOPS_PROGRESS", "plain")
    monkeypatch.setenv("VISIONOPS_CACHE_DIR", str(tmp_path / "dataset-cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


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
