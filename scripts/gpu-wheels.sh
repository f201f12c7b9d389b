#!/usr/bin/env bash
# Download into .whl/ the wheels a GPU machine with its own Python 3.12 and torch, but without
# MLflow or pydantic and without access to a package index, needs to run visionops from this
# checkout (scripts/gpu-check.sh installs them there with pip --no-index; docs/benchmarks.md,
# "The GPU check").
#
#   scripts/gpu-wheels.sh               # into .whl/, for CPython 3.12 on manylinux x86_64
#   scripts/gpu-wheels.sh --dest DIR    # elsewhere
#
# The list is what `visionops train`, the benchmarks and the tests import that the GPU image
# lacks: found by running them here with every other distribution's imports refused. Optional
# imports (GitPython, brotli, torchao, ...) stay out; so does Ray, whose wheel alone (about
# 70 MB) is over the 64 MiB a device call carries: gpu-check.sh skips the tune step without it.
# Each wheel is the version this checkout's virtualenv has (the tested one), else the newest.
# Wheels of other versions of the same packages are removed first (two versions of one package
# stop pip's install). Prints the wheels and their total size; exits 1 when that is over 64 MiB.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

WHEELS=(
    mlflow-skinny # the Python of mlflow; the full wheel only adds the server's web UI
    pydantic
    pydantic-core
    annotated-types
    typing-inspection
    typing-extensions # pydantic needs a recent one
    python-dotenv
    sqlalchemy # the sqlite:// tracking store
    alembic
    mako
    sqlparse
    cachetools
    opentelemetry-api
    opentelemetry-sdk
    opentelemetry-semantic-conventions
    opentelemetry-proto
    importlib-metadata
    fastapi # mlflow.gateway, imported by mlflow's model logging
    starlette
    databricks-sdk
    cryptography
    cffi
)
LIMIT_MIB=64

dest=$VISIONOPS_REPO_ROOT/.whl
while (($#)); do
    case $1 in
    --dest)
        (($# >= 2)) || usage_error "--dest needs a folder"
        dest=$2
        shift
        ;;
    -h | --help)
        print_help
        exit 0
        ;;
    *) usage_error "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

python=$(project_python)
mkdir -p "$dest"
# name==version for each wheel the virtualenv has, the bare name for the others.
mapfile -t specs < <("$python" -c '
import importlib.metadata as md, sys
for name in sys.argv[1:]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(name)
' "${WHEELS[@]}")

# Wheel file names spell the project with underscores, lower case in newer wheels.
for spec in "${specs[@]}"; do
    stem=${spec%%==*}
    stem=${stem//-/_}
    version=${spec#*==}
    shopt -s nullglob nocaseglob nocasematch
    for wheel in "$dest/$stem"-*.whl; do
        [[ $spec == *==* && $(basename "$wheel") == "$stem-$version-"* ]] || rm -v "$wheel" >&2
    done
    shopt -u nullglob nocaseglob nocasematch
done

run "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_34_x86_64 \
    --platform manylinux1_x86_64 --dest "$dest" "${specs[@]}"

ls -1 "$dest"
total=$(du -cb "$dest"/*.whl | tail -n 1 | cut -f 1)
mib=$((total / 1048576))
echo "$(find "$dest" -maxdepth 1 -type f -name '*.whl' | wc -l) wheels, $mib MiB in $dest"
if ((total > LIMIT_MIB * 1048576)); then
    die "the wheels take $mib MiB, over the $LIMIT_MIB MiB a device call carries"
fi
