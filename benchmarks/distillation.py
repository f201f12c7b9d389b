"""Distillation against its control: the same student trained with and without a teacher.

Trains the student twice with one configuration (``--recipe`` with ``--student-model`` and
``--student-width``), once plainly and once with ``--teacher``, then measures teacher and
students on the same validation images (no test-time augmentation) and their batch-1 latency
on one thread. Prints one JSON object with the targets: student at <= half the teacher's
parameters, >= 95% of its accuracy, >= 2x its batch-1 speed, and better than the control.

    python benchmarks/distillation.py --teacher models:/cifar10-fast/1 --recipe cifar10-fast \\
        --student-width 0.5 --dataset imagefolder --data-dir data/cifar10-jpeg \\
        --tracking-uri sqlite:///bench.db
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from _machine import describe_machine

from visionops.config import with_fields
from visionops.data import build_data, split_images
from visionops.optimize.measure import EvalImages, accuracy, time_predictor
from visionops.optimize.options import OptimizeOptions
from visionops.optimize.runtimes import load_predictor, torch_threads
from visionops.optimize.variant import Variant, count_parameters
from visionops.recipes import get_recipe
from visionops.training import train
from visionops.training.model_source import load_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="models:/NAME/VERSION")
    parser.add_argument("--recipe", default="cifar10-fast")
    parser.add_argument("--student-model", help="default: the recipe's model")
    parser.add_argument("--student-width", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, help="default: the recipe's")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--dataset", default="imagefolder")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--output-dir", default="outputs/bench-distill")
    args = parser.parse_args()

    base = get_recipe(args.recipe)
    values: dict[str, Any] = {
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "width_multiplier": args.student_width,
        "tracking_uri": args.tracking_uri,
        "experiment": "bench-distillation",
        "output_dir": args.output_dir,
    }
    if args.student_model:
        values["model"] = args.student_model
    if args.epochs:
        values["epochs"] = args.epochs
    control_cfg = with_fields(
        base, run_name="student-control", register_as="student-control", **values
    )
    distilled_cfg = with_fields(
        base,
        run_name="student-distilled",
        register_as="student-distilled",
        teacher=args.teacher,
        distill_temperature=args.temperature,
        distill_alpha=args.alpha,
        **values,
    )
    control, distilled = train(control_cfg), train(distilled_cfg)

    data = build_data(control_cfg.data, control_cfg.seed)
    images, labels = split_images(data, "val")
    val = EvalImages(images.numpy(), labels.numpy())
    models = {
        "teacher": load_classifier(args.teacher, args.tracking_uri).module,
        "control": load_classifier(str(control.model_uri), args.tracking_uri).module,
        "distilled": load_classifier(str(distilled.model_uri), args.tracking_uri).module,
    }
    timing_options = OptimizeOptions(methods=(), latency_runs=200, throughput_batches=10)
    figures: dict[str, dict[str, Any]] = {}
    for name, module in models.items():
        variant = Variant(name, name, "torch", "fp32", module=module)
        with torch_threads(1):
            predict = load_predictor(variant, 1)
            timing = time_predictor(predict, val.images, 1, timing_options)
            figures[name] = {
                "params": count_parameters(module)[0],
                "accuracy": accuracy(predict, val),
                "latency_ms_p50_b1": timing.latency_ms_p50_b1,
                "latency_ms_p95_b1": timing.latency_ms_p95_b1,
            }
    teacher, student, plain = figures["teacher"], figures["distilled"], figures["control"]
    checks = {
        "params_ratio": student["params"] / teacher["params"],
        "accuracy_ratio": student["accuracy"] / teacher["accuracy"],
        "b1_speedup": teacher["latency_ms_p50_b1"] / student["latency_ms_p50_b1"],
        "gain_over_control_pt": 100 * (student["accuracy"] - plain["accuracy"]),
    }
    checks["met"] = (
        checks["params_ratio"] <= 0.5
        and checks["accuracy_ratio"] >= 0.95
        and checks["b1_speedup"] >= 2
        and checks["gain_over_control_pt"] > 0
    )
    print(
        json.dumps(
            {
                "benchmark": "distillation",
                "machine": describe_machine(),
                "teacher": args.teacher,
                "epochs": control_cfg.epochs,
                "student": {"model": control_cfg.model.name, "width": args.student_width},
                "temperature": args.temperature,
                "alpha": args.alpha,
                "runs": {"control": control.run_id, "distilled": distilled.run_id},
                "figures": figures,
                "targets": checks,
            }
        )
    )


if __name__ == "__main__":
    main()
