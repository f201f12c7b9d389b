#!/usr/bin/env bash
# `uv pip` into a virtualenv, from the package sources pip is configured with (make install,
# make airflow, scripts/install-deploy-tools.sh).
#
#   scripts/uv-pip.sh VENV install -r requirements.lock ...   # any `uv pip` command and flags
#
# uv reads no pip configuration, so this passes it pip's: the index, extra indexes, find-links
# and certificate bundle that `pip config list` and the PIP_* variables name (the local wheels
# of the CUDA torch build on the benchmark machines, PyTorch's CPU index in CI), as the UV_*
# variables a caller has not set. uv then takes the best version from all of them, as pip does,
# instead of stopping at the first index that lists a package (a local index may hold other
# releases of a pinned nvidia-* package than PyPI). The uv is .venv's (make install puts it
# there from requirements.lock, hashes checked) unless UV names another.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

case ${1:-} in
-h | --help | "")
    print_help
    exit 0
    ;;
esac
venv=$1
shift
uv=${UV:-$VISIONOPS_REPO_ROOT/.venv/bin/uv}
[[ -x $venv/bin/python ]] || die "$venv is not a virtualenv"
[[ -x $uv ]] || die "no uv at $uv: make install puts it into .venv (or name one with UV=)"

# pip's configuration files, as the virtualenv's pip reads them (python3's where uv filled a
# virtualenv without pip).
settings=$("$venv/bin/python" -m pip config list 2>/dev/null ||
    python3 -m pip config list 2>/dev/null) || settings=""
# pip's setting: its PIP_* variable, else the [install] then [global] value of its files.
pip_setting() {
    local variable=PIP_${1^^} key value
    variable=${variable//-/_}
    if [[ -n ${!variable:-} ]]; then
        echo "${!variable}"
        return
    fi
    for key in "install.$1" "global.$1"; do
        value=$(grep -m 1 "^$key=" <<<"$settings") || continue
        value=${value#"$key="}
        value=${value#\'}
        value=${value%\'}
        echo "${value//\\n/ }"
        return
    done
}

index=$(pip_setting index-url)
extra=$(pip_setting extra-index-url)
links=$(pip_setting find-links)
cert=$(pip_setting cert)
[[ -n $index && -z ${UV_DEFAULT_INDEX:-} ]] && export UV_DEFAULT_INDEX=$index
[[ -n $extra && -z ${UV_EXTRA_INDEX_URL:-} ]] && export UV_EXTRA_INDEX_URL=$extra
# uv separates its find-links with commas, pip with white space.
[[ -n $links && -z ${UV_FIND_LINKS:-} ]] && export UV_FIND_LINKS=${links// /,}
[[ -n $cert && -z ${SSL_CERT_FILE:-} ]] && export SSL_CERT_FILE=$cert
export UV_INDEX_STRATEGY=${UV_INDEX_STRATEGY:-unsafe-best-match}
# Byte-compiled at install, as pip does: where PYTHONDONTWRITEBYTECODE is set (as on the test
# machines) nothing is compiled later, and every process would compile torch, MLflow and Ray
# again at import (some 15 s of CPU each).
export UV_COMPILE_BYTECODE=${UV_COMPILE_BYTECODE:-1}
export UV_PYTHON=$venv/bin/python
exec "$uv" pip "$@"
