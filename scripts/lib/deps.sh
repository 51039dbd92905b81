#!/usr/bin/env bash
# Install what the test suites need, only when it is missing.
#
#   scripts/lib/deps.sh [build|debian|brokers|jvm|python|browser|fleet|package|all]  (default: all)
#
#   build    libssl-dev and pkg-config (git2's https transport links system OpenSSL)
#   debian   reprepro and dpkg-deb (dk-reprepro's tests build and include real .debs)
#   brokers  Debian rabbitmq-server and activemq (needs root; apt-get update is
#            run once, only when something has to be installed)
#   jvm      a JDK (javac, jar; openjdk-17-jdk-headless) and JUnit 5 (Debian junit5:
#            /usr/share/java/junit-platform-console-standalone.jar)
#   python   stomp.py, pytest and prometheus_client (the /metrics tests' parser) for python3 (pip; --break-system-packages is
#            added only if pip refuses an externally-managed environment)
#   browser  Debian's chromium (dk-web's browser suite; Playwright comes from
#            PyPI into .dk-test/venv, scripts/browser-suite.sh)
#   fleet    Debian's ruby-stomp (the original's STOMP library: the fleet suite's
#            mixed-wire scenario has a Ruby subscriber)
#   package  what scripts/package and the install suite use: dpkg-dev (dpkg-shlibdeps
#            computes Depends), debootstrap (a clean Debian root), and the pinned
#            cargo-deb (cargo install --locked, ~2 minutes, once)
#
# Output of apt/pip goes to $DK_LOG_DIR/deps-*.log; one line per step here.
# Idempotent: a second run installs nothing and takes well under a second.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

export DEBIAN_FRONTEND=noninteractive
APT_LOG="$DK_LOG_DIR/deps-apt.log"
PIP_LOG="$DK_LOG_DIR/deps-pip.log"
PYTHON="${PYTHON:-python3}"
APT_UPDATED=0

apt_update_once() {
    [ "$APT_UPDATED" = 1 ] && return 0
    dk_log "deps: apt-get update"
    if ! apt-get update >>"$APT_LOG" 2>&1; then
        dk_tail_file "$APT_LOG" 30
        dk_die "deps: apt-get update failed (log: $APT_LOG)"
    fi
    APT_UPDATED=1
}

# apt_install PKG...: install the given packages (no recommends prompt, quiet).
apt_install() {
    dk_need_root "installing $*"
    apt_update_once
    local t0; t0=$(dk_now)
    dk_log "deps: apt-get install $*"
    if ! apt-get install -y -q -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold "$@" >>"$APT_LOG" 2>&1; then
        dk_tail_file "$APT_LOG" 40
        dk_die "deps: apt-get install $* failed (log: $APT_LOG)"
    fi
    dk_log "deps: installed $* in $(dk_elapsed "$t0")s"
}

deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

deps_build() {
    local missing=()
    deb_installed libssl-dev || missing+=(libssl-dev)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    if [ ${#missing[@]} -eq 0 ]; then
        dk_log "deps: libssl-dev and pkg-config already installed"
        return 0
    fi
    apt_install "${missing[@]}"
}

deps_debian() {
    local missing=()
    command -v reprepro >/dev/null || missing+=(reprepro)
    command -v dpkg-deb >/dev/null || missing+=(dpkg)
    if [ ${#missing[@]} -eq 0 ]; then
        dk_log "deps: reprepro and dpkg-deb already installed"
        return 0
    fi
    apt_install "${missing[@]}"
}

deps_brokers() {
    local missing=()
    { deb_installed rabbitmq-server && command -v rabbitmq-server >/dev/null; } || missing+=(rabbitmq-server)
    { deb_installed activemq && [ -x /etc/init.d/activemq ]; } || missing+=(activemq)
    if [ ${#missing[@]} -eq 0 ]; then
        dk_log "deps: rabbitmq-server and activemq already installed"
        return 0
    fi
    apt_install "${missing[@]}"
}

deps_jvm() {
    local missing=()
    { command -v javac >/dev/null && command -v jar >/dev/null; } || missing+=(openjdk-17-jdk-headless)
    [ -f /usr/share/java/junit-platform-console-standalone.jar ] || missing+=(junit5)
    if [ ${#missing[@]} -eq 0 ]; then
        dk_log "deps: JDK and JUnit 5 already installed"
        return 0
    fi
    apt_install "${missing[@]}"
}

pip_install() {
    local t0; t0=$(dk_now)
    dk_log "deps: pip install $*"
    if "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@" >>"$PIP_LOG" 2>&1; then
        dk_log "deps: pip installed $* in $(dk_elapsed "$t0")s"
        return 0
    fi
    if grep -q externally-managed-environment "$PIP_LOG"; then
        dk_log "deps: pip refused (externally managed); retrying with --break-system-packages"
        if "$PYTHON" -m pip install --quiet --disable-pip-version-check --break-system-packages "$@" >>"$PIP_LOG" 2>&1; then
            dk_log "deps: pip installed $* in $(dk_elapsed "$t0")s"
            return 0
        fi
    fi
    dk_tail_file "$PIP_LOG" 40
    dk_die "deps: pip install $* failed (log: $PIP_LOG)"
}

deps_python() {
    command -v "$PYTHON" >/dev/null || dk_die "deps: $PYTHON not found"
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip
    fi
    local want=()
    # stomp.py 8.x or 9.x is the peer under test; pytest runs the interop suite.
    "$PYTHON" -c 'import stomp, sys; sys.exit(0 if int(stomp.__version__.split(".")[0]) >= 8 else 1)' \
        >/dev/null 2>&1 || want+=('stomp.py>=8,<10')
    "$PYTHON" -c 'import pytest' >/dev/null 2>&1 || want+=('pytest')
    # prometheus_client's text parser checks every daemon's /metrics (tools/tests/metrics.rs).
    "$PYTHON" -c 'import prometheus_client' >/dev/null 2>&1 || want+=('prometheus_client')
    if [ ${#want[@]} -eq 0 ]; then
        dk_log "deps: stomp.py, pytest and prometheus_client already installed"
        return 0
    fi
    pip_install "${want[@]}"
}

deps_browser() {
    if [ -x /usr/bin/chromium ]; then
        dk_log "deps: chromium already installed"
        return 0
    fi
    apt_install --no-install-recommends chromium fonts-dejavu-core
}

deps_fleet() {
    if deb_installed ruby-stomp; then
        dk_log "deps: ruby-stomp already installed"
        return 0
    fi
    apt_install --no-install-recommends ruby-stomp
}

CARGO_DEB_VERSION=3.8.0

deps_package() {
    local missing=()
    command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [ ${#missing[@]} -eq 0 ]; then
        dk_log "deps: dpkg-dev and debootstrap already installed"
    else
        apt_install --no-install-recommends "${missing[@]}"
    fi
    if [ "$(cargo deb --version 2>/dev/null)" = "cargo-deb $CARGO_DEB_VERSION" ]; then
        dk_log "deps: cargo-deb $CARGO_DEB_VERSION already installed"
        return 0
    fi
    dk_log "deps: cargo install cargo-deb $CARGO_DEB_VERSION (--locked; about 2 minutes, once)"
    if ! cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION" >>"$DK_LOG_DIR/deps-cargo.log" 2>&1; then
        dk_tail_file "$DK_LOG_DIR/deps-cargo.log" 30
        dk_die "deps: could not install cargo-deb $CARGO_DEB_VERSION"
    fi
}

main() {
    local what="${1:-all}"
    case "$what" in
        build) deps_build ;;
        debian) deps_debian ;;
        brokers) deps_brokers ;;
        jvm) deps_jvm ;;
        python) deps_python ;;
        browser) deps_browser ;;
        fleet) deps_fleet ;;
        package) deps_package ;;
        all) deps_build; deps_debian; deps_brokers; deps_jvm; deps_python; deps_browser; deps_fleet; deps_package ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) dk_die "deps.sh: unknown argument '$what' (build|debian|brokers|jvm|python|browser|fleet|package|all)" ;;
    esac
}

main "$@"
