#!/usr/bin/env bash
# What only a GPU can show, measured in under 9 minutes and written as JSON under OUTDIR
# (docs/benchmarks.md, "The GPU check"; .github/workflows/gpu.yml runs it every week).
#
#   scripts/gpu-check.sh OUTDIR                          # every step
#   scripts/gpu-check.sh --only tta-eager,tune OUTDIR    # some steps (machine always runs)
#   scripts/gpu-check.sh --dry-run OUTDIR                # print the steps and commands, run none
#
#   machine             the Python, torch and GPUs as torch and nvidia-smi see them
#   dataset             the CIFAR-10 JPEG copy, unpacked from the shared tarball when missing
#   cuda-tests          pytest on the test files that skip without CUDA, now with it
#   tta-eager           benchmarks/time_to_accuracy.py, cifar10-fast, --compile off
#   tta-compile         the same with --compile on
#   data-pipeline       benchmarks/data_pipeline.py: the device loader on the GPU
#   ddp-scaling         benchmarks/ddp_scaling.py on 1, 2, 4 ... and every GPU present
#   tune                visionops tune: two trials at --gpus-per-trial 0.5, checked to overlap
#   recipe-resnet18     visionops train --recipe cifar10-resnet18 to the end (its accuracy)
#   recipe-mobilenetv3  visionops train --recipe cifar10-mobilenetv3 to the end
#
# Each step writes OUTDIR/STEP.json (status, reason, seconds, command and the step's own JSON
# as "result") and OUTDIR/STEP.log; OUTDIR/summary.json lists every step's status (ok, skipped
# or failed, with the reason) and seconds. A step whose needs are missing is skipped with one
# line saying which: no CUDA GPU (then the script still exits 0), a Python package that did
# not travel (Ray's wheel alone is about 70 MB), or no dataset. Exit status 1 when a step
# failed.
#
# Python: VISIONOPS_PYTHON, else .venv/bin/python, else python3, with PYTHONPATH=src so that
# visionops runs from this checkout. When it cannot import MLflow or pydantic and .whl/ holds
# wheels (scripts/gpu-wheels.sh downloads them), they are installed there with pip --no-index
# into the work folder first.
#
# Settings (environment):
#   GPU_CHECK_DATASETS  the folder of cifar10-train-jpeg.tar.gz (../shared/datasets)
#   GPU_CHECK_DATA_DIR  the unpacked copy, train/<class>/*.jpg (data/cifar10-jpeg)
#   GPU_CHECK_BUDGET_S  wall-clock budget of all steps (540); each also has its own timeout, a
#                       step is cut at the budget's end, and one with under 30 s left is skipped
#   GPU_CHECK_WORK_DIR  MLflow stores, checkpoints and sweeps (default: a temporary folder,
#                       removed at the end)
#   GPU_CHECK_GPUS      the GPU count a dry run shows the DDP step with (nvidia-smi's, else 1)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

SELF=$VISIONOPS_REPO_ROOT/scripts/gpu-check.sh
HELPER=$VISIONOPS_REPO_ROOT/scripts/lib/gpu_check.py
TTA=benchmarks/time_to_accuracy.py
MIN_STEP_S=30

# name, timeout in seconds, needs (cuda: a CUDA GPU; deps: MLflow and pydantic import; data: the
# dataset step succeeded; ray: Ray Tune imports; compile-flag: time_to_accuracy.py has --compile).
# In order of what the figures are for: the recipes' 60 and 20 epochs take the longest, last.
STEPS=(
    "machine 60"
    "dataset 120"
    "cuda-tests 180 cuda deps"
    "tta-eager 180 cuda deps data compile-flag"
    "tta-compile 300 cuda deps data compile-flag"
    "data-pipeline 180 cuda deps data"
    "ddp-scaling 150 cuda deps"
    "tune 180 cuda deps ray"
    "recipe-resnet18 300 cuda deps data"
    "recipe-mobilenetv3 420 cuda deps data"
)

settings() {
    DATASETS=$(realpath -m "${GPU_CHECK_DATASETS:-$VISIONOPS_REPO_ROOT/../shared/datasets}")
    TARBALL=$DATASETS/cifar10-train-jpeg.tar.gz
    DATA_DIR=$(realpath -m "${GPU_CHECK_DATA_DIR:-$VISIONOPS_REPO_ROOT/data/cifar10-jpeg}")
    BUDGET=${GPU_CHECK_BUDGET_S:-540}
    PY=$(project_python)
    export PYTHONUNBUFFERED=1
}

# --- the steps: each prints its figures as one JSON object, last on stdout -------------------

step_machine() {
    run "$PY" "$HELPER" machine
}

step_dataset() {
    if [[ -d $DATA_DIR/train ]]; then
        note "using the copy in $DATA_DIR"
    else
        [[ -f $TARBALL ]] || $DRY_RUN ||
            die "no CIFAR-10 copy: neither $DATA_DIR/train nor $TARBALL (set GPU_CHECK_DATA_DIR or GPU_CHECK_DATASETS)"
        # Into a side folder first, so that a cut-off unpack leaves no half copy for the next run.
        run rm -rf "$DATA_DIR/.unpacking"
        run mkdir -p "$DATA_DIR/.unpacking"
        run tar -xzf "$TARBALL" -C "$DATA_DIR/.unpacking"
        run mv "$DATA_DIR/.unpacking/train" "$DATA_DIR/train"
        run rm -rf "$DATA_DIR/.unpacking"
    fi
    $DRY_RUN || "$PY" -c '
import json, pathlib, sys
train = pathlib.Path(sys.argv[1], "train")
print(json.dumps({
    "data_dir": sys.argv[1],
    "classes": sum(1 for p in train.iterdir() if p.is_dir()),
    "images": sum(1 for p in train.rglob("*") if p.is_file()),
}))' "$DATA_DIR"
}

# The test files that check torch.cuda.is_available() (to skip without CUDA, or to test the
# error without it): with a GPU present, their CUDA-only tests run.
cuda_test_files() {
    (cd "$VISIONOPS_REPO_ROOT" && grep -rlE --include='test_*.py' 'cuda\.is_available\(\)' tests | sort)
}

step_cuda_tests() {
    local files rc=0
    mapfile -t files < <(cuda_test_files)
    ((${#files[@]})) || die "no test file under tests/ checks torch.cuda.is_available()"
    run "$PY" -m pytest -p no:cacheprovider -q -ra --junitxml "$WORK/cuda-tests.xml" "${files[@]}" ||
        rc=$?
    run "$PY" "$HELPER" junit "$WORK/cuda-tests.xml"
    return "$rc"
}

time_to_accuracy() {
    run "$PY" "$TTA" --recipe cifar10-fast --dataset imagefolder --data-dir "$DATA_DIR" \
        --device cuda --compile "$1"
}

step_tta_eager() {
    time_to_accuracy off
}

step_tta_compile() {
    time_to_accuracy on
}

step_data_pipeline() {
    # The classic loaders get up to 8 workers: 2 (the default) would starve a GPU machine's.
    local workers
    workers=$(nproc)
    ((workers <= 8)) || workers=8
    run "$PY" benchmarks/data_pipeline.py --dataset imagefolder --data-dir "$DATA_DIR" \
        --num-workers "$workers"
}

# 1, 2, 4 ... below the GPU count, and the count itself.
process_counts() {
    local gpus=${GPU_CHECK_GPUS:-1} n=1 counts=()
    while ((n < gpus)); do
        counts+=("$n")
        n=$((n * 2))
    done
    counts+=("$gpus")
    echo "${counts[@]}"
}

step_ddp_scaling() {
    local procs
    read -ra procs <<<"$(process_counts)"
    run "$PY" benchmarks/ddp_scaling.py --procs "${procs[@]}"
}

# run_tee FILE COMMAND...: as run, with the command's stdout also kept in FILE.
run_tee() {
    local file=$1
    shift
    printf '+ %s | tee %s\n' "$(shell_quote "$@")" "$(shell_quote "$file")" >&"${TRACE_FD:-2}"
    $DRY_RUN || "$@" | tee "$file"
}

step_tune() {
    # Random search and FIFO: both trials start at once and run to the end, so the only thing
    # that can keep them apart is the GPU (0.5 each: both fit on one).
    local dir=$WORK/tune uri="sqlite:///$WORK/tune/mlflow.db"
    run mkdir -p "$dir"
    run_tee "$dir/tune.out" "$PY" -m visionops tune --preset quick --search random \
        --scheduler fifo --num-samples 2 --max-epochs 3 --cpus-per-trial 2 --gpus-per-trial 0.5 \
        --max-concurrent-trials 2 --storage-path "$dir/results" --tracking-uri "$uri" --json
    run "$PY" "$HELPER" overlap "$dir/tune.out" "$uri"
}

train_recipe() {
    run "$PY" -m visionops train --recipe "$1" --dataset imagefolder --data-dir "$DATA_DIR" \
        --device cuda --tracking-uri "sqlite:///$WORK/mlflow.db" --experiment gpu-check \
        --output-dir "$WORK/outputs" --json
}

step_recipe_resnet18() {
    train_recipe cifar10-resnet18
}

step_recipe_mobilenetv3() {
    train_recipe cifar10-mobilenetv3
}

# --- what a step needs --------------------------------------------------------------------

# Sets CUDA_MISSING ("" when a GPU is usable) and GPU_CHECK_GPUS.
probe_cuda() {
    local count
    CUDA_MISSING=""
    export GPU_CHECK_GPUS=0
    if ! command -v nvidia-smi >/dev/null; then
        CUDA_MISSING="no CUDA GPU: nvidia-smi is not on PATH"
    elif ! count=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null); then
        CUDA_MISSING="no CUDA GPU: torch does not import in $PY"
    elif ((count == 0)); then
        CUDA_MISSING="no CUDA GPU: torch.cuda.is_available() is false for $PY"
    else
        GPU_CHECK_GPUS=$count
    fi
}

# The first of the modules $@ that $PY cannot import (nothing when all import).
missing_module() {
    "$PY" - "$@" <<'EOF'
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError as error:
        print(error.name or name)
        break
    except Exception as error:  # it is there but breaks on import: as good as missing
        print(f"{name} ({type(error).__name__}: {error})")
        break
EOF
}

# Sets DEPS_MISSING. Installs the carried wheels of .whl/ first when they are needed.
probe_deps() {
    local modules=(pydantic dotenv mlflow.tracking visionops.training visionops.cli.parser)
    local site=$WORK/site missing wheels=()
    missing=$(missing_module "${modules[@]}")
    if [[ -d $VISIONOPS_REPO_ROOT/.whl ]]; then
        mapfile -t wheels < <(find "$VISIONOPS_REPO_ROOT/.whl" -maxdepth 1 -type f -name '*.whl' | sort)
    fi
    if [[ -n $missing ]] && ((${#wheels[@]})); then
        note "$PY cannot import $missing: installing the ${#wheels[@]} wheels of .whl/ into $site"
        "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" "${wheels[@]}" >&2 || note "pip could not install the wheels of .whl/"
        export PYTHONPATH=$PYTHONPATH:$site
        missing=$(missing_module "${modules[@]}")
    fi
    # visionops runs uninstalled from src/, but the models it logs pin visionops==VERSION, read
    # from the package's metadata: a dist-info beside the wheels gives it one.
    if [[ -z $missing ]] && ! "$PY" -c 'import importlib.metadata as m; m.version("visionops")' 2>/dev/null; then
        local version
        version=$("$PY" -c 'import visionops; print(visionops.__version__)')
        mkdir -p "$site/visionops-$version.dist-info"
        printf 'Metadata-Version: 2.1\nName: visionops\nVersion: %s\n' "$version" \
            >"$site/visionops-$version.dist-info/METADATA"
        [[ :$PYTHONPATH: == *:$site:* ]] || export PYTHONPATH=$PYTHONPATH:$site
    fi
    DEPS_MISSING=""
    if [[ -n $missing ]]; then
        DEPS_MISSING="missing dependency: $PY cannot import $missing"
        ((${#wheels[@]})) || DEPS_MISSING+=" (carry its wheels in .whl/: scripts/gpu-wheels.sh)"
    fi
}

# Sets REASON to why the step cannot run for want of $1, or "" when it can. Probes once.
check_need() {
    REASON=""
    case $1 in
    cuda) REASON=$CUDA_MISSING ;;
    deps)
        [[ -n ${DEPS_MISSING+set} ]] || probe_deps
        REASON=$DEPS_MISSING
        ;;
    ray)
        if [[ -z ${RAY_MISSING+set} ]]; then
            RAY_MISSING=""
            if [[ -n $(missing_module ray.tune) ]]; then
                RAY_MISSING="missing dependency: $PY has no Ray Tune, and its wheels (Ray's alone is about 70 MB) are more than a device call's 64 MiB carry"
            fi
        fi
        REASON=$RAY_MISSING
        ;;
    data)
        [[ $(step_status dataset) == ok ]] || REASON="no dataset: the dataset step did not succeed (OUTDIR/dataset.json)"
        ;;
    compile-flag)
        grep -q -- '"--compile"' "$VISIONOPS_REPO_ROOT/$TTA" ||
            REASON="$TTA has no --compile option, so its eager and compiled runs cannot be told apart"
        ;;
    esac
}

step_status() {
    [[ -f $OUTDIR/$1.json ]] || return 0
    "$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["status"])' "$OUTDIR/$1.json"
}

# --- running them -------------------------------------------------------------------------

now_us() {
    local now=${EPOCHREALTIME//[.,]/}
    echo "$((10#$now))"
}

# timeout(1) runs a step in a process group of its own, which a Ctrl-C at the terminal does not
# reach: it is told here, and stops the step's processes (torchrun's workers, Ray's trials).
STEP_PID=""
stop_step() {
    [[ -z $STEP_PID ]] || kill -TERM "$STEP_PID" 2>/dev/null || true
    exit 130
}

# run_step NAME TIMEOUT NEED...: skip it (with the reason) or run it as its own process group
# under timeout(1), its output in OUTDIR/NAME.log; then OUTDIR/NAME.json.
run_step() {
    local name=$1 limit=$2 need left start rc elapsed
    shift 2
    REASON=""
    if $DRY_RUN; then
        printf '\n== %s (timeout %s s%s)\n' "$name" "$limit" "${*:+; needs: $*}"
        # The needs a dry run can tell without probing the machine.
        [[ " $* " != *" compile-flag "* ]] || check_need compile-flag
        [[ -z $REASON ]] || echo "(would be skipped: $REASON)"
        "step_${name//-/_}"
        return 0
    fi
    for need in "$@"; do
        check_need "$need"
        [[ -z $REASON ]] || break
    done
    left=$((BUDGET - ($(now_us) - STARTED_US) / 1000000))
    if [[ -z $REASON ]] && ((left < MIN_STEP_S)); then
        REASON="out of time: ${left} s of the ${BUDGET} s budget left"
    fi
    if [[ -n $REASON ]]; then
        note "skip $name: $REASON"
        "$PY" "$HELPER" skip --outdir "$OUTDIR" --step "$name" --reason "$REASON"
        return 0
    fi
    ((limit <= left)) || limit=$left
    note "== $name (up to $limit s, log: $OUTDIR/$name.log)"
    start=$(now_us)
    rc=0
    timeout --kill-after=15 "$limit" "$SELF" --step "$name" >"$OUTDIR/$name.log" 2>&1 &
    STEP_PID=$!
    wait "$STEP_PID" || rc=$?
    STEP_PID=""
    elapsed=$(($(now_us) - start))
    "$PY" "$HELPER" record --outdir "$OUTDIR" --step "$name" --rc "$rc" \
        --seconds "$((elapsed / 1000000)).$(printf '%06d' $((elapsed % 1000000)))" \
        --timeout "$limit" --log "$OUTDIR/$name.log"
}

main() {
    local only="" outdir="" entry name words selected=() known=()
    for entry in "${STEPS[@]}"; do known+=("${entry%% *}"); done
    while (($#)); do
        case $1 in
        --dry-run) DRY_RUN=true ;;
        --only)
            (($# >= 2)) || usage_error "--only needs step names, e.g. --only tta-eager,tune"
            only=$2
            shift
            ;;
        --only=*) only=${1#--only=} ;;
        --step)
            # Internal: one step in this process, as run_step starts it.
            settings
            OUTDIR=${GPU_CHECK_OUTDIR:?} WORK=${GPU_CHECK_WORK_DIR:?}
            cd "$VISIONOPS_REPO_ROOT"
            "step_${2//-/_}"
            return
            ;;
        -h | --help)
            print_help
            return 0
            ;;
        -*) usage_error "unknown option '$1' (see --help)" ;;
        *)
            [[ -z $outdir ]] || usage_error "one OUTDIR only, got '$outdir' and '$1'"
            outdir=$1
            ;;
        esac
        shift
    done
    [[ -n $outdir ]] || usage_error "give the folder for the results: scripts/gpu-check.sh OUTDIR"
    if [[ -n $only ]]; then
        IFS=, read -ra selected <<<"$only"
        for name in "${selected[@]}"; do
            [[ " ${known[*]} " == *" $name "* ]] ||
                usage_error "unknown step '$name' in --only; the steps: ${known[*]}"
        done
    fi

    settings
    [[ $BUDGET =~ ^[0-9]+$ ]] || usage_error "GPU_CHECK_BUDGET_S is '$BUDGET'; give whole seconds"
    OUTDIR=$(realpath -m "$outdir")
    $DRY_RUN || mkdir -p "$OUTDIR"
    if [[ -n ${GPU_CHECK_WORK_DIR:-} ]]; then
        WORK=$(realpath -m "$GPU_CHECK_WORK_DIR")
        mkdir -p "$WORK"
    elif $DRY_RUN; then
        WORK=WORK_DIR
    else
        WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
        trap 'rm -rf "$WORK"' EXIT
    fi
    export GPU_CHECK_OUTDIR=$OUTDIR GPU_CHECK_WORK_DIR=$WORK
    export PYTHONPATH=$VISIONOPS_REPO_ROOT/src${PYTHONPATH:+:$PYTHONPATH}
    cd "$VISIONOPS_REPO_ROOT"
    STARTED_US=$(now_us)
    trap stop_step INT TERM

    if $DRY_RUN; then
        TRACE_FD=1
        export GPU_CHECK_GPUS=${GPU_CHECK_GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)}
        ((GPU_CHECK_GPUS > 0)) || GPU_CHECK_GPUS=1
        echo "dry run: the commands each step would run (PYTHONPATH=$PYTHONPATH)"
    else
        probe_cuda
        [[ -z $CUDA_MISSING ]] || note "$CUDA_MISSING: the steps that need CUDA are skipped"
    fi

    local ran=()
    for entry in "${STEPS[@]}"; do
        read -ra words <<<"$entry"
        name=${words[0]}
        # The machine always; the dataset when a chosen step needs it.
        if [[ -n $only && $name != machine && ",$only," != *",$name,"* ]]; then
            if [[ $name != dataset ]] || ! steps_need data "${selected[@]}"; then
                continue
            fi
        fi
        run_step "${words[@]}"
        ran+=("$name")
    done
    $DRY_RUN && return 0

    "$PY" "$HELPER" summary --outdir "$OUTDIR" --budget "$BUDGET" \
        --seconds "$((($(now_us) - STARTED_US) / 1000000))" "${ran[@]}"
    local name_failed=()
    for name in "${ran[@]}"; do
        [[ $(step_status "$name") != failed ]] || name_failed+=("$name")
    done
    ((${#name_failed[@]} == 0)) || die "failed: ${name_failed[*]} (see their .log in $OUTDIR)"
}

# steps_need NEED STEP...: whether one of the steps needs NEED.
steps_need() {
    local need=$1 entry
    shift
    for entry in "${STEPS[@]}"; do
        [[ " $* " == *" ${entry%% *} "* && " $entry " == *" $need "* ]] && return 0
    done
    return 1
}

# Sourced (to call its functions one by one), it only defines them.
[[ ${BASH_SOURCE[0]} != "$0" ]] || main "$@"
