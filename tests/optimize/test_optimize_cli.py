"""``visionops optimize`` / ``visionops export`` from the command line: output and bad input."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from optimize_fixtures import SOURCE_NAME, TrainedSource

from visionops.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_optimize_json_is_all_of_stdout(
    trained_source: TrainedSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        capsys,
        "optimize",
        "--model-uri",
        f"models:/{SOURCE_NAME}/1",
        "--tracking-uri",
        trained_source.tracking_uri,
        "--methods",
        "onnx",
        "--calibration-images",
        "64",
        "--latency-runs",
        "10",
        "--output-dir",
        str(tmp_path / "out"),
        "--json",
    )
    assert code == 0
    payload = json.loads(out)  # the report's text is on stderr
    assert set(payload) >= {"parent_run_id", "report", "variants"}
    keys = {
        "method", "runtime", "model_uri", "version", "size_mb", "params", "accuracy",
        "accuracy_delta", "latency_ms_p50_b1", "latency_ms_p95_b1", "images_per_sec_b64",
        "skipped",
    }  # fmt: skip
    assert all(keys <= set(v) for v in payload["variants"])
    assert [v["method"] for v in payload["variants"]] == ["source", "onnx"]
    assert Path(payload["report"]).is_file()
    assert "| onnx | onnxruntime |" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "onnx,int9-magic"], "unknown optimization method 'int9-magic'; known:"),
        (
            ["--methods", "onnx", "--calibration-images", "4"],
            "--calibration-images 4: input should be greater than or equal to 32",
        ),
        (["--methods", "onnx", "--calibration-images", "100000"], "more than the"),
    ],
)
def test_optimize_bad_input_is_one_line(
    trained_source: TrainedSource,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    code, _, err = _run(
        capsys,
        "optimize",
        "--model-uri",
        f"models:/{SOURCE_NAME}/1",
        "--tracking-uri",
        trained_source.tracking_uri,
        "--output-dir",
        str(tmp_path / "out"),
        *extra,
    )
    assert code == 2
    # One error line, last (MLflow may have drawn download progress bars before it).
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, err


@pytest.mark.parametrize(
    ("flag", "value", "accepted"),
    [
        ("--threads", "0", "greater than or equal to 1"),
        ("--threads", "1,-2", "greater than or equal to 1"),
        ("--threads", "1,two", "a valid integer, unable to parse string as an integer"),
        ("--latency-runs", "0", "greater than or equal to 1"),
        ("--finetune-epochs", "0", "greater than or equal to 1"),
        ("--finetune-lr-fraction", "0.0", "greater than 0"),
        ("--prune-ratio", "1.0", "less than 1"),
        ("--select-for-latency-ms", "-5.0", "greater than 0"),
    ],
)
def test_optimize_flags_out_of_range_stop_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, accepted: str
) -> None:
    # A closed port: any work at all (the server check first) would be another error.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    out = tmp_path / "out"
    argv = ["optimize", "--model-uri", "models:/m/1", "--tracking-uri", closed]
    code, stdout, err = _run(capsys, *argv, "--output-dir", str(out), flag, value)

    assert code == 2
    assert err.splitlines() == [f"error: {flag} {value}: input should be {accepted}"], err
    assert stdout == "" and not out.exists()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (f"models:/{SOURCE_NAME}/99", "99"),
        (f"models:/{SOURCE_NAME}/no-such-alias", "no alias 'no-such-alias'"),
        ("models:/no-such-model/1", "no-such-model"),
        ("runs:/abc/model", "must name a registered model"),
    ],
)
def test_optimize_unknown_model_or_alias(
    trained_source: TrainedSource,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    uri: str,
    message: str,
) -> None:
    code, _, err = _run(
        capsys,
        "optimize",
        "--model-uri",
        uri,
        "--tracking-uri",
        trained_source.tracking_uri,
        "--methods",
        "onnx",
        "--output-dir",
        str(tmp_path / "out"),
    )
    assert code == 2
    assert err.startswith("error: ") and message in err


def test_export_writes_a_checked_onnx_file(
    trained_source: TrainedSource, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    target = tmp_path / "model.onnx"
    code, out, _ = _run(
        capsys,
        "export",
        "--model-uri",
        f"models:/{SOURCE_NAME}/1",
        "--tracking-uri",
        trained_source.tracking_uri,
        "--format",
        "onnx",
        "--opset",
        "18",
        "--output",
        str(target),
        "--json",
    )
    assert code == 0
    payload = json.loads(out)
    assert payload["parity"]["passed"] is True
    assert payload["parity"]["images"] >= 256
    assert payload["parity"]["max_abs_diff"] < 1e-4
    model = onnx.load(str(target))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 18
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param  # a named, dynamic batch axis
