"""``visionops evaluate``: evaluate a logged model on its training run's data, logged to MLflow.

visionops evaluate --model-uri models:/vision-classifier/1 --split val --json
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from visionops.cli.output import add_json_flag, columns, emit, mlflow_ui_hint
from visionops.config import overrides_from_mapping


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "evaluate",
        help="evaluate a logged model and record the result in MLflow",
        description="Evaluate an MLflow model on the data split its training run used.",
    )
    evaluate.add_argument(
        "--model-uri", required=True, help="MLflow model URI (models:/NAME/VERSION, runs:/...)"
    )
    evaluate.add_argument(
        "--split", default="val", choices=["train", "val", "test"], help="split to evaluate"
    )
    evaluate.add_argument("--dataset", help="override the training run's dataset")
    evaluate.add_argument("--data-dir", help="override the training run's data folder")
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device to evaluate on")
    evaluate.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)"
    )
    evaluate.add_argument(
        "--parent-run-id",
        metavar="RUN_ID",
        help="nest the evaluation run under this MLflow run, in its experiment (default: "
        "MLFLOW_RUN_ID, which `mlflow run` sets; else a run of its own in the training run's "
        "experiment)",
    )
    add_json_flag(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from visionops.tracking.connection import check_command_server

    args.tracking_server = check_command_server(args.tracking_uri)
    overrides = overrides_from_mapping(
        {
            k: v
            for k, v in {
                "dataset": args.dataset,
                "data_dir": args.data_dir,
                "device": args.device,
            }.items()
            if v
        },
        "command line",
    )
    from visionops.training.model_eval import evaluate_model

    evaluation = evaluate_model(
        args.model_uri,
        args.split,
        overrides,
        tracking_uri=args.tracking_uri,
        parent_run_id=args.parent_run_id,
    )
    result = evaluation.result
    confusion = result.confusion.tolist()
    payload = {
        "model_uri": evaluation.model_uri,
        "split": evaluation.split,
        "run_id": evaluation.run_id,
        "source_run_id": evaluation.source_run_id,
        "metrics": {"accuracy": result.accuracy, "loss": result.loss},
        "per_class_accuracy": dict(zip(evaluation.classes, result.per_class_accuracy, strict=True)),
        "confusion_matrix": confusion,
        "num_images": result.num_images,
    }
    lines = [
        f"model:     {evaluation.model_uri}",
        f"split:     {evaluation.split} ({result.num_images} images)",
        f"accuracy:  {result.accuracy:.4f}",
        f"loss:      {result.loss:.4f}",
        "",
        *class_table(evaluation.classes, confusion),
        "",
        *confusion_table(evaluation.classes, confusion),
        "",
        f"logged to MLflow run {evaluation.run_id}",
        f"MLflow UI: {mlflow_ui_hint(args.tracking_server)}",
    ]
    emit(lines, payload, args.json)
    return 0


#: Class names are cut to this many characters in the tables, so that ten classes fit in 100
#: columns (the JSON, the metrics and the artifacts keep them whole).
NAME_WIDTH = 20
#: Beyond this many classes the matrix is too wide to read in a terminal: the JSON and the
#: run's artifacts hold it.
MAX_MATRIX_CLASSES = 20


def class_table(classes: Sequence[str], confusion: list[list[int]]) -> list[str]:
    """One line per class: its number (the confusion matrix's), name, images and accuracy."""
    rows = [["", "class", "images", "accuracy"]]
    for index, (name, row) in enumerate(zip(classes, confusion, strict=True)):
        total = sum(row)
        accuracy = f"{row[index] / total:.4f}" if total else "-"
        rows.append([str(index), _short(name), str(total), accuracy])
    return columns(rows, align="><>>")


def confusion_table(classes: Sequence[str], confusion: list[list[int]]) -> list[str]:
    """The confusion matrix, true classes down, predicted classes across (by number)."""
    if len(classes) > MAX_MATRIX_CLASSES:
        return [f"confusion matrix: {len(classes)} classes, too wide here (see --json)"]
    header = ["", "true \\ predicted", *(str(i) for i in range(len(classes)))]
    rows = [
        [str(index), _short(name), *(str(count) for count in row)]
        for index, (name, row) in enumerate(zip(classes, confusion, strict=True))
    ]
    title = "confusion matrix (rows: true class; columns: predicted class, by number)"
    return [title, *columns([header, *rows], align="><" + ">" * len(classes))]


def _short(name: str) -> str:
    return name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 3] + "..."
