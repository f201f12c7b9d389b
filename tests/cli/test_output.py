"""How commands print: aligned tables, the confusion matrix, ``--json`` alone on stdout."""

from __future__ import annotations

import json
import re

import pytest

from visionops.cli.commands.evaluate import NAME_WIDTH, class_table, confusion_table
from visionops.cli.output import columns, emit, json_document_only

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_json_is_all_of_stdout_and_the_lines_go_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    emit(["accuracy:  0.9"], {"accuracy": 0.9}, as_json=True)
    out, err = capsys.readouterr()
    assert json.loads(out) == {"accuracy": 0.9}
    assert err == "accuracy:  0.9\n"

    emit(["accuracy:  0.9"], {"accuracy": 0.9}, as_json=False)
    assert capsys.readouterr() == ("accuracy:  0.9\n", "")


def test_under_json_a_library_printing_to_stdout_cannot_break_the_document(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with json_document_only(True):
        print("Trial status: 1 RUNNING")  # as Ray Tune's trial table does
        emit(["best: 0.9"], {"best": 0.9}, as_json=True)
    out, err = capsys.readouterr()
    assert json.loads(out) == {"best": 0.9}
    assert err == "Trial status: 1 RUNNING\nbest: 0.9\n"

    with json_document_only(False):
        print("Trial status: 1 RUNNING")
    assert capsys.readouterr() == ("Trial status: 1 RUNNING\n", "")


def test_columns_are_as_wide_as_their_widest_cell() -> None:
    rows = [("cifar10-mobilenetv3", "MobileNetV3"), ("debug", "tiny"), ("n", "right", "x")]
    assert columns(rows, align="<>") == [
        "cifar10-mobilenetv3  MobileNetV3",
        "debug                       tiny",
        "n                          right  x",
    ]
    assert columns([]) == []


def test_the_class_table_lines_up_whatever_the_names() -> None:
    names = ("a", "a-class-name-of-thirty-letters", "b")
    confusion = [[9, 1, 0], [0, 5, 5], [0, 0, 0]]
    lines = class_table(names, confusion)
    assert lines == [
        "   class                 images  accuracy",
        "0  a                         10    0.9000",
        "1  a-class-name-of-t...      10    0.5000",
        "2  b                          0         -",
    ]
    assert len({len(line) for line in lines}) == 1
    assert len("a-class-name-of-t...") == NAME_WIDTH


def test_ten_classes_of_a_confusion_matrix_fit_in_100_columns() -> None:
    long_names = tuple(f"{name}-with-a-long-suffix" for name in CIFAR10)
    confusion = [[4500 if i == j else 12 for j in range(10)] for i in range(10)]
    title, header, *rows = confusion_table(long_names, confusion)
    assert title.startswith("confusion matrix (rows: true class; columns: predicted class")
    assert header.split() == ["true", "\\", "predicted", *map(str, range(10))]
    assert rows[0].split() == ["0", "airplane-with-a-l...", "4500", *["12"] * 9]
    assert max(len(line) for line in [header, *rows]) <= 100
    # Each count is right-aligned under its class number.
    column_ends = [m.end() for m in re.finditer(r"\S+", header)][-10:]
    for row in rows:
        assert [m.end() for m in re.finditer(r"\S+", row)][-10:] == column_ends


def test_a_matrix_too_wide_for_a_terminal_is_left_to_json() -> None:
    names = tuple(f"class{i}" for i in range(100))
    confusion = [[0] * 100 for _ in range(100)]
    assert confusion_table(names, confusion) == [
        "confusion matrix: 100 classes, too wide here (see --json)"
    ]
