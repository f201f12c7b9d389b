"""``visionops tune --address`` on a real two-node Ray cluster built on this host.

``ray start --head`` and ``ray start --address`` run as two nodes with one CPU each, so the two
one-CPU trials of the sweep can only run one per node. The CLI runs as a separate process,
exactly as a user would start it on a cluster node.

Each node is a ``ray start --block`` process in a session of its own, with its own temp folder
and free ports, and is stopped by signalling that process: ``ray stop`` would stop every Ray on
the machine, other people's included. The cluster uses token authentication with a token of its
own, because a Ray that takes other nodes binds its servers to every interface (a loopback
``--node-ip-address`` is replaced by the host's address; only a Ray that never takes other
nodes, as ``visionops tune`` starts without ``--address``, stays on loopback: see
docs/tuning.md), and because an explicit ``RAY_AUTH_MODE`` keeps the test independent of
whatever ``~/.ray/auth_token`` other local Ray sessions leave behind.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from visionops import names
from visionops.tuning.results import TRIAL_TABLE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_RAY = str(Path(sys.executable).with_name("ray"))
_START_TIMEOUT_S = 120
_STOP_TIMEOUT_S = 30
_SWEEP_TIMEOUT_S = 600

# The live nodes by id, asked by a driver process of its own (ray.nodes() needs no dashboard).
_LIST_NODES = """
import json, sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(json.dumps({
    n["NodeID"]: {
        "ip": n["NodeManagerAddress"],
        "role": "head" if "head_node" in n["Resources"] else "worker",
    }
    for n in ray.nodes() if n["Alive"]
}))
ray.shutdown()
"""


@dataclass
class RayCluster:
    address: str
    env: dict[str, str]  # what a process needs to join or use the cluster (its auth token)
    nodes: dict[str, dict[str, str]]  # node id -> {"ip": ..., "role": "head" or "worker"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_node(stack: ExitStack, flags: list[str], env: dict[str, str], log: Path) -> None:
    """Start one node with ``ray start --block`` and wait until it is up; ``stack`` stops it."""
    # Short on purpose: Ray puts Unix sockets under it (at most 107 bytes a path).
    temp_dir = tempfile.mkdtemp(prefix="vo-ray-")
    stack.callback(shutil.rmtree, temp_dir, ignore_errors=True)
    common = [
        "--block",
        "--num-cpus",
        "1",
        "--temp-dir",
        temp_dir,
        # Fixed defaults (52365, 10002-19999) would clash with the other node and other Rays.
        "--dashboard-agent-listen-port",
        str(_free_port()),
        "--min-worker-port",
        "0",
        "--max-worker-port",
        "0",
        "--object-store-memory",
        str(100 * 1024 * 1024),
        "--disable-usage-stats",
    ]
    with log.open("w") as out:
        process = subprocess.Popen(
            [_RAY, "start", *flags, *common],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    stack.callback(_stop_node, process)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while "Ray runtime started" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"ray start {' '.join(flags)} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _stop_node(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to ``ray start --block`` stops the node's processes; SIGKILL its session if not.

    Only the ``ray start`` process gets the SIGTERM: its handler stops GCS, raylet and the rest
    itself, and a GCS signalled at the same time would leave it waiting for a dead server.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(_STOP_TIMEOUT_S)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever of the node is left
    process.wait()


def _alive_nodes(address: str, env: dict[str, str]) -> dict[str, dict[str, str]]:
    out = subprocess.run(
        [sys.executable, "-c", _LIST_NODES, address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[RayCluster]:
    """A head and a worker node on this host, one CPU each, stopped after the test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        # No draining on SIGTERM: nothing here needs it, and it delays the stop.
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
    )
    address = f"127.0.0.1:{_free_port()}"
    with ExitStack() as stack:
        head = ["--head", "--node-ip-address", "127.0.0.1", "--port", address.split(":")[1]]
        head += ["--resources", json.dumps({"head_node": 1}), "--include-dashboard", "false"]
        # --include-dashboard false still starts its API server, on 8265 unless told otherwise.
        head += ["--dashboard-port", str(_free_port())]
        _start_node(stack, head, env, tmp_path / "ray-head.log")
        worker = ["--address", address, "--resources", json.dumps({"worker_node": 1})]
        _start_node(stack, worker, env, tmp_path / "ray-worker.log")
        nodes = _alive_nodes(address, env)
        for _ in range(10):  # the worker node may take a moment to count as alive
            if len(nodes) == 2:
                break
            time.sleep(1)
            nodes = _alive_nodes(address, env)
        yield RayCluster(address, env, nodes)


def test_a_sweep_on_a_two_node_cluster_runs_a_trial_on_each_node(
    tmp_path: Path, tracking_uri: str, ray_cluster: RayCluster
) -> None:
    nodes = ray_cluster.nodes
    assert sorted(node["role"] for node in nodes.values()) == ["head", "worker"]
    storage = tmp_path / "shared-sweeps"  # one folder both nodes reach: they share this host
    command = [sys.executable, "-m", "visionops", "tune", "--recipe", "debug"]
    command += ["--dataset", "synthetic", "--search", "random", "--scheduler", "fifo"]
    command += ["--num-samples", "2", "--max-epochs", "1", "--cpus-per-trial", "1"]
    command += ["--address", ray_cluster.address, "--storage-path", str(storage)]
    command += ["--name", "cluster-sweep", "--json"]
    env = {**ray_cluster.env, "MLFLOW_TRACKING_URI": tracking_uri}

    started = time.monotonic()
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=_SWEEP_TIMEOUT_S
    )
    print(f"sweep on the cluster took {time.monotonic() - started:.0f} s")
    assert done.returncode == 0, done.stderr[-5000:]

    payload = json.loads(done.stdout.strip().splitlines()[-1])
    assert [t["status"] for t in payload["trials"]] == ["completed", "completed"]
    assert payload["best_run_id"] in {t["run_id"] for t in payload["trials"]}
    assert 0.0 <= payload["best_metric"] <= 1.0
    assert payload["model_uri"].startswith("models:/")
    assert payload["registered_model"]["version"] == 1
    assert Path(payload["sweep_dir"]) == storage / "cluster-sweep"

    client = MlflowClient(tracking_uri)
    runs = [client.get_run(t["run_id"]) for t in payload["trials"]]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {payload["parent_run_id"]}
    assert all(r.info.status == "FINISHED" for r in runs)
    ran_on = [r.data.tags[names.TRIAL_NODE_ID_TAG] for r in runs]
    # One trial per node: each node has one CPU and each trial takes one.
    assert sorted(ran_on) == sorted(nodes)
    assert [r.data.tags[names.TRIAL_NODE_IP_TAG] for r in runs] == [nodes[n]["ip"] for n in ran_on]
    # Each trial wrote its visionops run into the shared storage folder.
    trial_runs = storage / "cluster-sweep" / "trial-runs"
    for trial, run in zip(payload["trials"], runs, strict=True):
        assert (trial_runs / trial["trial_id"] / run.info.run_id / "config.yaml").is_file()
    # The sweep's trial table names the node of every trial too.
    table = client.download_artifacts(payload["parent_run_id"], TRIAL_TABLE, str(tmp_path))
    with open(table, newline="") as handle:
        rows = {row["run_id"]: row["node_id"] for row in csv.DictReader(handle)}
    assert rows == {r.info.run_id: r.data.tags[names.TRIAL_NODE_ID_TAG] for r in runs}
