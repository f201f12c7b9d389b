"""Every optimisation of a registered model against the FP32 PyTorch model, with the targets.

Runs ``visionops.optimize.optimize_model`` (all methods by default) on a trained, registered
model and prints one JSON object: the report's rows, and each target with its measured ratio:

- INT8 (best of int8-static, openvino-int8, qat): >= 2.5x images/s at batch 64 and >= 2x at
  batch 1 against the FP32 PyTorch model, >= 3.8x smaller file, <= 0.5 point accuracy loss;
- structured pruning: >= 30% fewer parameters, <= 1 point loss after fine-tuning.

    python benchmarks/optimize.py --model-uri models:/cifar10-fast/1 \\
        --dataset imagefolder --data-dir data/cifar10-jpeg --tracking-uri sqlite:///bench.db
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _machine import describe_machine

from visionops.config import overrides_from_mapping
from visionops.optimize.options import DEFAULT_METHODS, OptimizeOptions
from visionops.optimize.pipeline import optimize_model
from visionops.optimize.report import SOURCE_ROW, Row

INT8_VARIANTS = ("int8-static", "openvino-int8", "qat", "int8-pt2e")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--dataset")
    parser.add_argument("--data-dir")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument(
        "--finetune-lr-fraction", type=float, default=OptimizeOptions.finetune_lr_fraction
    )
    parser.add_argument("--prune-ratio", type=float, default=0.5)
    parser.add_argument("--calibration-images", type=int, default=512)
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--output-dir", default="outputs/bench-optimize")
    args = parser.parse_args()

    overrides = {k: v for k, v in {"dataset": args.dataset, "data_dir": args.data_dir}.items() if v}
    options = OptimizeOptions(
        methods=tuple(args.methods.split(",")),
        calibration_images=args.calibration_images,
        finetune_epochs=args.finetune_epochs,
        finetune_lr_fraction=args.finetune_lr_fraction,
        prune_ratio=args.prune_ratio,
        latency_runs=args.latency_runs,
        throughput_batches=20,
    )
    result = optimize_model(
        args.model_uri,
        options,
        tracking_uri=args.tracking_uri,
        data_overrides=overrides_from_mapping(overrides, "benchmark"),
        output_dir=Path(args.output_dir),
    )
    rows = result.report.rows
    print(
        json.dumps(
            {
                "benchmark": "optimize",
                "model_uri": args.model_uri,
                "machine": describe_machine(),
                "report": str(result.report_path),
                "targets": targets(rows),
                "variants": [row.as_dict() for row in rows],
                "speedups": result.report.as_dict()["speedups"],
            },
            default=str,
        )
    )


def targets(rows: list[Row]) -> dict[str, Any]:
    source = next(r for r in rows if r.method == SOURCE_ROW)
    assert source.serving and source.batch and source.size_mb and source.params
    figures: dict[str, Any] = {}
    int8 = [r for r in rows if r.name in INT8_VARIANTS and r.serving and r.batch and r.size_mb]
    if int8:
        best = max(int8, key=lambda r: r.batch.images_per_sec_b64)  # type: ignore[union-attr]
        assert best.serving and best.batch and best.size_mb is not None
        b64 = best.batch.images_per_sec_b64 / source.batch.images_per_sec_b64
        b1 = source.serving.latency_ms_p50_b1 / best.serving.latency_ms_p50_b1
        smaller = source.size_mb / best.size_mb
        loss_pt = 100 * -(best.accuracy_delta or 0.0)
        figures["int8"] = {
            "variant": best.name,
            "b64_speedup": b64,
            "b1_speedup": b1,
            "size_ratio": smaller,
            "accuracy_loss_pt": loss_pt,
            "met": b64 >= 2.5 and b1 >= 2 and smaller >= 3.8 and loss_pt <= 0.5,
        }
    pruned = next((r for r in rows if r.name == "prune-structured" and r.params), None)
    if pruned and pruned.params and pruned.serving:
        fewer = 1 - pruned.params / source.params
        loss_pt = 100 * -(pruned.accuracy_delta or 0.0)
        figures["prune_structured"] = {
            "fewer_params": fewer,
            "accuracy_loss_pt": loss_pt,
            "b1_speedup": source.serving.latency_ms_p50_b1 / pruned.serving.latency_ms_p50_b1,
            "met": fewer >= 0.3 and loss_pt <= 1.0,
        }
    return figures


if __name__ == "__main__":
    main()
