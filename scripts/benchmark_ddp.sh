#!/usr/bin/env bash
# DDP scaling of `visionops train` on this machine: 1, 2, 4 ... processes (up to the GPUs, or
# the cores on CPU), as benchmarks/ddp_scaling.py measures it. The JSON goes to stdout and to
# benchmarks/results/ddp_scaling-<host>-<time>.json, the table to stderr. The same command runs
# on CPU (gloo) and on GPU machines (NCCL, one process per GPU).
#
#   scripts/benchmark_ddp.sh                          # default process counts
#   scripts/benchmark_ddp.sh --procs 1 2 --epochs 2   # any flag of benchmarks/ddp_scaling.py
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    print_help
    exit 0
fi

results=$VISIONOPS_REPO_ROOT/benchmarks/results
mkdir -p "$results"
out=$results/ddp_scaling-$(hostname -s)-$(date +%Y%m%d-%H%M%S).json
"$(project_python)" "$VISIONOPS_REPO_ROOT/benchmarks/ddp_scaling.py" "$@" | tee "$out"
echo "saved $out" >&2
