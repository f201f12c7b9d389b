"""The real team stack on loopback ports: PostgreSQL databases, moto S3, ``mlflow server``.

``stack_factory`` starts a stack per call (its databases are dropped and its processes
stopped at the end of the test); ``shared_stack`` is one stack for the whole session, for tests
that only read or add to it.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from visionops.server.databases import drop_databases
from visionops.server.process import ServerProcess, start_local_s3, start_server
from visionops.server.settings import ServerSettings

ADMIN_USER = "admin"
ADMIN_PASSWORD = "test-admin-password-0"
BUCKET = "visionops-test-artifacts"
S3_KEYS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    settings: ServerSettings
    s3: ServerProcess
    server: ServerProcess
    server_env: dict[str, str]
    bucket: str = BUCKET
    extra: list[ServerProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.settings.url

    @property
    def admin_auth(self) -> tuple[str, str]:
        """(username, password) of the stack's admin, as ``requests`` takes ``auth=``."""
        return self.settings.admin_username, ADMIN_PASSWORD

    @property
    def s3_endpoint(self) -> str:
        return self.s3.url

    def s3_client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint, **_boto_keys())

    def restart_server(self) -> None:
        """Start the server again after ``server.stop()`` (same port, databases, bucket)."""
        self.server = start_server(self.settings, env=self.server_env)

    def stop(self) -> None:
        for process in (self.server, self.s3, *self.extra):
            process.stop()
        drop_databases(self.settings)


def _boto_keys() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_KEYS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_KEYS["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_KEYS["AWS_DEFAULT_REGION"],
    }


def start_stack(state_dir: Path, default_permission: str = "READ") -> Stack:
    tag = uuid.uuid4().hex[:10]
    s3 = start_local_s3("127.0.0.1", free_port(), state_dir / "moto.log")
    settings = ServerSettings(
        port=free_port(),
        workers=1,
        tracking_db=f"visionops_test_{tag}",
        auth_db=f"visionops_test_{tag}_auth",
        artifacts_destination=f"s3://{BUCKET}/mlartifacts",
        admin_username=ADMIN_USER,
        admin_password=ADMIN_PASSWORD,
        default_permission=default_permission,
        state_dir=state_dir,
    )
    server_env = {**S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": s3.url}
    try:
        server = start_server(settings, env=server_env)
    except BaseException:
        s3.stop()
        drop_databases(settings)
        raise
    return Stack(settings, s3, server, server_env)


@pytest.fixture(name="free_port")
def free_port_fixture() -> Callable[[], int]:
    """A function that returns a free loopback port."""
    return free_port


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(**kwargs: str) -> Stack:
        stack = start_stack(tmp_path / f"stack-{len(stacks)}", **kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="session")
def shared_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_stack(tmp_path_factory.mktemp("shared-stack"))
    yield stack
    stack.stop()


@pytest.fixture
def as_user(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[Stack, str | None, str | None], None]]:
    """Point MLflow's client at ``stack`` with these credentials (None: anonymous); MLflow's
    process-wide tracking URI is reset afterwards."""
    import mlflow

    def use(stack: Stack, username: str | None, password: str | None) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.url)
        mlflow.set_tracking_uri(stack.url)
        for name, value in (
            ("MLFLOW_TRACKING_USERNAME", username),
            ("MLFLOW_TRACKING_PASSWORD", password),
        ):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    yield use
    mlflow.set_tracking_uri(None)
