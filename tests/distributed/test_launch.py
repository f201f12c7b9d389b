"""The torchrun command line `visionops train --nproc` builds, and the launch flags' checks."""

from __future__ import annotations

import pytest

from visionops.cli import EXIT_USER_ERROR, main
from visionops.cli.launch_flags import LAUNCHER_FLAGS
from visionops.distributed.launch import TorchrunOptions, torchrun_arguments, worker_argv
from visionops.errors import ConfigError


def test_workers_get_the_command_line_without_the_launcher_flags() -> None:
    argv = [
        "--recipe", "debug", "--nproc", "2", "--max-restarts=1", "--lr", "0.1",
        "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "h:1", "--rdzv-id", "j",
        "--use-gpu", "--json",
    ]  # fmt: skip
    assert worker_argv(argv, LAUNCHER_FLAGS) == ["--recipe", "debug", "--lr", "0.1", "--json"]


def test_one_node_runs_standalone_with_a_fresh_job_id_each_launch() -> None:
    options = TorchrunOptions(nproc=2, max_restarts=3)
    first = torchrun_arguments(options, ["--epochs", "1"])
    second = torchrun_arguments(options, ["--epochs", "1"])
    assert first[:3] == ["--nproc-per-node=2", "--max-restarts=3", "--standalone"]
    assert first[-5:] == ["--module", "visionops", "train", "--epochs", "1"]
    ids = [next(a for a in argv if a.startswith("--rdzv-id=")) for argv in (first, second)]
    assert ids[0] != ids[1]


@pytest.mark.parametrize(("node_rank", "is_host"), [(0, "1"), (1, "0")])
def test_several_nodes_meet_at_a_c10d_rendezvous_hosted_by_node_zero(
    node_rank: int, is_host: str
) -> None:
    options = TorchrunOptions(
        nproc=1, nnodes=2, node_rank=node_rank, rdzv_endpoint="10.0.0.1:29400", rdzv_id="job-7"
    )
    argv = torchrun_arguments(options, [])
    assert "--standalone" not in argv
    for expected in (
        "--nnodes=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=10.0.0.1:29400",
        "--rdzv-id=job-7",
        f"--rdzv-conf=is_host={is_host}",
    ):
        assert expected in argv


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (TorchrunOptions(nproc=0), "--nproc (0)"),
        (TorchrunOptions(nproc=1, nnodes=2, rdzv_id="j"), "needs --rdzv-endpoint"),
        (TorchrunOptions(nproc=1, nnodes=2, rdzv_endpoint="h:1"), "needs --rdzv-id"),
        (TorchrunOptions(nproc=1, nnodes=2, node_rank=2, rdzv_endpoint="h:1"), "0..1"),
        (TorchrunOptions(nproc=1, max_restarts=-1), "--max-restarts"),
    ],
)
def test_bad_launch_options_are_refused(options: TorchrunOptions, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        torchrun_arguments(options, [])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--nproc", "2", "--ray-workers", "2"], "exclude each other"),
        (["--max-restarts", "1"], "needs --nproc N or --ray-workers N"),
        (["--address", "h:6379"], "need --ray-workers"),
        (["--nproc", "3"], "batch_size (32) must divide evenly among the job's 3 processes"),
    ],
)
def test_the_cli_refuses_inconsistent_launch_flags_before_starting_workers(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--recipe", "debug", "--dataset", "synthetic", *flags])
    assert code == EXIT_USER_ERROR
    assert message in capsys.readouterr().err
