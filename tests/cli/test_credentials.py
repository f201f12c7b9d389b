"""Where a password written into a tracking URI goes: MLflow's variables, and nowhere else.

The end-to-end check (train, a resumed sweep, Ray Train and serve against a basic-auth server)
is ``tests/server/test_uri_credentials.py``; these are the rules, without a server.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from visionops.cli.credentials import (
    config_without_credentials,
    move_command_credentials,
    move_credentials,
)
from visionops.cli.parser import build_parser
from visionops.config import TrainConfig, flatten_config, save_config, with_fields
from visionops.errors import ConfigError
from visionops.serving.settings import ServeConfig
from visionops.tracking.client import uri_for_workers
from visionops.tracking.spool import MetricSpool

USER, PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
URI = "http://alice:s3cr%40t@mlflow:5000"


def test_the_login_moves_to_mlflows_variables_and_the_uri_keeps_none() -> None:
    environ: dict[str, str] = {}
    assert move_credentials(URI, environ, "--tracking-uri") == "http://mlflow:5000"
    assert environ == {USER: "alice", PASSWORD: "s3cr@t"}  # %-decoded, as requests logs in


def test_variables_that_are_set_win_over_the_uris_login(caplog: pytest.LogCaptureFixture) -> None:
    environ = {USER: "bob", PASSWORD: "bobs-password"}
    with caplog.at_level(logging.WARNING):
        assert move_credentials(URI, environ, "--tracking-uri") == "http://mlflow:5000"
    assert environ == {USER: "bob", PASSWORD: "bobs-password"}
    assert "--tracking-uri" in caplog.text and "s3cr" not in caplog.text


def test_a_redacted_password_is_no_login() -> None:
    environ: dict[str, str] = {}
    assert move_credentials("http://alice:***@mlflow:5000", environ, "x") == "http://mlflow:5000"
    assert environ == {}


def test_the_flag_the_variables_and_the_workers_command_line_lose_the_password() -> None:
    argv = ["train", "--nproc", "2", f"--tracking-uri={URI}"]
    args = build_parser().parse_args(argv)
    args.argv = argv
    environ = {"MLFLOW_TRACKING_URI": "http://carol:other@elsewhere:5000"}
    move_command_credentials(args, environ)
    assert args.tracking_uri == "http://mlflow:5000"
    assert args.argv[-1] == "--tracking-uri=http://mlflow:5000"
    # The flag's login came first; the variable's URI loses its own all the same.
    assert environ == {
        "MLFLOW_TRACKING_URI": "http://elsewhere:5000",
        USER: "alice",
        PASSWORD: "s3cr@t",
    }


def test_a_config_files_uri_loses_its_password(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    cfg = config_without_credentials(with_fields(TrainConfig(), tracking_uri=URI), environ)
    assert cfg.tracking.tracking_uri == "http://mlflow:5000"
    assert environ == {USER: "alice", PASSWORD: "s3cr@t"}


def test_a_password_left_in_the_config_is_saved_and_logged_as_stars(tmp_path: Path) -> None:
    cfg = with_fields(TrainConfig(), tracking_uri=URI)
    assert flatten_config(cfg)["tracking.tracking_uri"] == "http://alice:***@mlflow:5000"
    save_config(cfg, tmp_path / "config.yaml")
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["tracking"]["tracking_uri"] == "http://alice:***@mlflow:5000"


def test_what_travels_to_other_processes_refuses_a_password() -> None:
    assert uri_for_workers("http://mlflow:5000") == "http://mlflow:5000"
    with pytest.raises(ConfigError, match=r"alice:\*\*\*@mlflow") as refused:
        uri_for_workers(URI)
    assert "s3cr" not in str(refused.value)
    with pytest.raises(ValidationError, match="holds a password") as invalid:
        ServeConfig(model_uri="models:/clf@production", tracking_uri=URI)
    assert "s3cr" not in invalid.value.errors()[0]["msg"]


def test_the_metric_spool_keeps_the_uri_without_its_password(tmp_path: Path) -> None:
    from mlflow.entities import Metric

    spool = MetricSpool(tmp_path / "spool")
    batch = spool.append("run-1", URI, [Metric("loss", 0.5, 0, 1)])
    assert batch.tracking_uri == URI  # this process still sends with it
    spool.mark_end("run-1", URI, "FINISHED")
    files = [p.read_text() for p in (tmp_path / "spool").iterdir()]
    assert len(files) == 2 and all("s3cr" not in text for text in files)
    assert all("http://mlflow:5000" in text for text in files)
