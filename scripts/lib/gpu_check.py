"""The JSON side of scripts/gpu-check.sh: step records, the summary, and the checks of a result.

    python scripts/lib/gpu_check.py record --outdir OUT --step NAME --rc 0 --seconds 41.2 \\
        --timeout 180 --log OUT/NAME.log
    python scripts/lib/gpu_check.py skip --outdir OUT --step NAME --reason "no CUDA GPU"
    python scripts/lib/gpu_check.py summary --outdir OUT --budget 540 --seconds 500 NAME...
    python scripts/lib/gpu_check.py junit FILE.xml         # pytest's outcomes
    python scripts/lib/gpu_check.py overlap TUNE.out URI   # both trials at once, on CUDA?
    python scripts/lib/gpu_check.py machine                # the GPUs torch and nvidia-smi see

Only the standard library, except ``overlap`` (MLflow) and ``machine`` (torch, when it imports),
so that the records are written whatever the interpreter lacks.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

TIMED_OUT = (124, 137)  # timeout(1)'s statuses: TERM sent, then KILL


def last_json_object(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object: what the benchmarks and ``--json``
    commands print last, after any progress lines."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def write_record(outdir: Path, record: dict[str, Any]) -> None:
    (outdir / f"{record['step']}.json").write_text(json.dumps(record, indent=2) + "\n")
    reason = f"  ({record['reason']})" if record.get("reason") else ""
    print(f"{record['status']:<8} {record['step']:<20} {record['seconds']:>7.1f} s{reason}")


def cmd_record(args: argparse.Namespace) -> int:
    log = Path(args.log).read_text(errors="replace") if Path(args.log).exists() else ""
    result = last_json_object(log)
    if args.rc in TIMED_OUT:
        status, reason = "failed", f"timed out after {args.timeout:g} s"
    elif args.rc != 0:
        status, reason = "failed", f"exit status {args.rc}: {last_line(log)}"
    elif result is None:
        status, reason = "failed", "the step printed no JSON result"
    else:
        status, reason = "ok", None
    write_record(
        Path(args.outdir),
        {
            "step": args.step,
            "status": status,
            "reason": reason,
            "seconds": round(args.seconds, 1),
            "timeout_s": args.timeout,
            # The commands, as the step traced them (`+ COMMAND` lines).
            "commands": [line[2:] for line in log.splitlines() if line.startswith("+ ")],
            "log": Path(args.log).name,
            "result": result,
        },
    )
    return 0


def cmd_skip(args: argparse.Namespace) -> int:
    write_record(
        Path(args.outdir),
        {"step": args.step, "status": "skipped", "reason": args.reason, "seconds": 0.0},
    )
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    outdir = Path(args.outdir)
    steps = []
    for name in args.steps:
        record = json.loads((outdir / f"{name}.json").read_text())
        steps.append({key: record.get(key) for key in ("step", "status", "reason", "seconds")})
    machine = json.loads((outdir / "machine.json").read_text()) if "machine" in args.steps else {}
    counts = {s: sum(step["status"] == s for step in steps) for s in ("ok", "skipped", "failed")}
    summary = {
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(args.seconds, 1),
        "budget_s": args.budget,
        "machine": machine.get("result"),
        **counts,
        "steps": steps,
    }
    (outdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{counts['ok']} ok, {counts['skipped']} skipped, {counts['failed']} failed in "
        f"{args.seconds:.0f} s: {outdir / 'summary.json'}"
    )
    return 0


def cmd_junit(args: argparse.Namespace) -> int:
    """pytest's junit XML as {"passed", "failed", "skipped", "tests": [...]}."""
    tests = []
    for case in ElementTree.parse(args.xml).getroot().iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = {"failure": "failed", "error": "error"}.get(tag, tag)
                message = (found.get("message") or "").strip()[:300]
                break
        tests.append(
            {
                "test": f"{case.get('classname')}::{case.get('name')}",
                "outcome": outcome,
                **({"message": message} if message else {}),
            }
        )
    counts = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "error")}
    skipped = sum(t["outcome"] == "skipped" for t in tests)
    print(json.dumps({**counts, "skipped": skipped, "tests": tests}))
    return 0


def cmd_overlap(args: argparse.Namespace) -> int:
    """The sweep's trials as MLflow recorded them and how long they ran at the same time; exit
    status 1 when fewer than two trials finished, they never overlapped, or one trained on a
    device other than ``--device`` (its run's device tag, e.g. ``cuda:0 (NVIDIA H200), ...``)."""
    from mlflow.tracking import MlflowClient

    from visionops import names

    sweep = last_json_object(Path(args.tune_output).read_text(errors="replace"))
    if sweep is None:
        print(f"error: {args.tune_output} holds no JSON from visionops tune", file=sys.stderr)
        return 1
    client = MlflowClient(args.tracking_uri)
    trials = []
    for trial in sweep["trials"]:
        if trial.get("run_id") is None:  # it failed before train() started its run
            trials.append(trial)
            continue
        run = client.get_run(trial["run_id"])
        trials.append(
            {
                **trial,
                "device": run.data.tags.get(names.DEVICE_TAG),
                "start_s": run.info.start_time / 1000,
                "end_s": (run.info.end_time or run.info.start_time) / 1000,
            }
        )
    finished = [t for t in trials if t["status"] == "completed" and "start_s" in t]
    overlap = 0.0
    if len(finished) >= 2:
        overlap = min(t["end_s"] for t in finished) - max(t["start_s"] for t in finished)
    concurrent = overlap > 0
    elsewhere = [t for t in finished if not str(t["device"]).startswith(args.device)]
    print(
        json.dumps(
            {
                "trials": trials,
                "overlap_seconds": round(max(overlap, 0.0), 2),
                "concurrent": concurrent,
                "device": args.device,
                "best_metric": sweep.get("best_metric"),
                "parent_run_id": sweep.get("parent_run_id"),
            }
        )
    )
    if not concurrent:
        print(
            f"error: {len(finished)} of {len(trials)} trials finished and they did not run at "
            f"the same time (overlap {overlap:.1f} s)",
            file=sys.stderr,
        )
        return 1
    if elsewhere:
        print(
            f"error: trials {', '.join(t['trial_id'] for t in elsewhere)} trained on "
            f"{elsewhere[0]['device']!r}, not {args.device}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_machine(args: argparse.Namespace) -> int:
    machine: dict[str, Any] = {
        "host": platform.node(),
        "python": platform.python_version(),
        "cores": os.cpu_count(),
    }
    if shutil.which("nvidia-smi"):
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        machine["nvidia_smi"] = [line.strip() for line in query.stdout.splitlines() if line]
    else:
        machine["nvidia_smi"] = None
    try:
        import torch
    except ImportError as error:
        machine["torch"] = f"does not import: {error}"
    else:
        cuda = torch.cuda.is_available()
        machine.update(
            torch=torch.__version__,
            torch_cuda=torch.version.cuda,
            cuda_available=cuda,
            gpus=[
                {
                    "name": torch.cuda.get_device_name(i),
                    "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30),
                    "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
                }
                for i in range(torch.cuda.device_count() if cuda else 0)
            ],
        )
    print(json.dumps(machine))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    record = commands.add_parser("record", help="write OUTDIR/STEP.json for a step that ran")
    record.add_argument("--outdir", required=True)
    record.add_argument("--step", required=True)
    record.add_argument("--rc", type=int, required=True)
    record.add_argument("--seconds", type=float, required=True)
    record.add_argument("--timeout", type=float, required=True)
    record.add_argument("--log", required=True)
    record.set_defaults(run=cmd_record)

    skip = commands.add_parser("skip", help="write OUTDIR/STEP.json for a skipped step")
    skip.add_argument("--outdir", required=True)
    skip.add_argument("--step", required=True)
    skip.add_argument("--reason", required=True)
    skip.set_defaults(run=cmd_skip)

    summary = commands.add_parser("summary", help="write OUTDIR/summary.json from the records")
    summary.add_argument("--outdir", required=True)
    summary.add_argument("--budget", type=float, required=True)
    summary.add_argument("--seconds", type=float, required=True)
    summary.add_argument("steps", nargs="+")
    summary.set_defaults(run=cmd_summary)

    junit = commands.add_parser("junit", help="pytest's junit XML as one JSON line")
    junit.add_argument("xml")
    junit.set_defaults(run=cmd_junit)

    overlap = commands.add_parser("overlap", help="the sweep's trials and their overlap")
    overlap.add_argument("tune_output", help="the stdout of visionops tune --json")
    overlap.add_argument("tracking_uri")
    overlap.add_argument("--device", default="cuda", help="what each trial's device must be")
    overlap.set_defaults(run=cmd_overlap)

    machine = commands.add_parser("machine", help="the GPUs as torch and nvidia-smi see them")
    machine.set_defaults(run=cmd_machine)

    args = parser.parse_args()
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
