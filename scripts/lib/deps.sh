#!/usr/bin/env bash
# Install what the test suites need, only when it is missing.
#
#   scripts/lib/deps.sh [build|debian|brokers|jvm|python|browser|fleet|package|cargo-tools|all]  (default: all)
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
#   cargo-tools  the cargo subcommands and tools the suites build with: cargo-deb and
#            cbindgen (pinned), cargo-fuzz (cargo install --locked, each once; no apt).
#            scripts/test runs this in the background, at idle priority, while the
#            first suites run; `all` does not include it
#
# With `all`, the missing Debian packages of every group are installed together: one
# apt-get run (and one more for those wanted without recommends) instead of one per group.
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

# apt_want [--no-install-recommends] PKG...: install now, or, while `all` collects
# (COLLECT=1), add to the list for one of the two apt-get runs at its end (with and
# without recommends).
COLLECT=0
APT_WANTED=()
APT_WANTED_NR=()
apt_want() {
    if [ "$COLLECT" = 0 ]; then
        apt_install "$@"
    elif [ "$1" = --no-install-recommends ]; then
        shift
        APT_WANTED_NR+=("$@")
    else
        APT_WANTED+=("$@")
    fi
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
    apt_want "${missing[@]}"
}

deps_debian() {
    local missing=()
    command -v reprepro >/dev/null || missing+=(reprepro)
    command -v dpkg-deb >/dev/null || missing+=(dpkg)
    if [ ${#missing[@]} -eq 0 ]; then
        dk_log "deps: reprepro and dpkg-deb already installed"
        return 0
    fi
    apt_want "${missing[@]}"
}

deps_brokers() {
    local missing=()
    { deb_installed rabbitmq-server && command -v rabbitmq-server >/dev/null; } || missing+=(rabbitmq-server)
    { deb_installed activemq && [ -x /etc/init.d/activemq ]; } || missing+=(activemq)
    if [ ${#missing[@]} -eq 0 ]; then
        dk_log "deps: rabbitmq-server and activemq already installed"
        return 0
    fi
    apt_want "${missing[@]}"
}

deps_jvm() {
    local missing=()
    { command -v javac >/dev/null && command -v jar >/dev/null; } || missing+=(openjdk-17-jdk-headless)
    [ -f /usr/share/java/junit-platform-console-standalone.jar ] || missing+=(junit5)
    if [ ${#missing[@]} -eq 0 ]; then
        dk_log "deps: JDK and JUnit 5 already installed"
        return 0
    fi
    apt_want "${missing[@]}"
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
    apt_want --no-install-recommends chromium fonts-dejavu-core
}

deps_fleet() {
    if deb_installed ruby-stomp; then
        dk_log "deps: ruby-stomp already installed"
        return 0
    fi
    apt_want --no-install-recommends ruby-stomp
}

CARGO_DEB_VERSION=3.8.0

deps_package() {
    local missing=()
    command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [ ${#missing[@]} -eq 0 ]; then
        dk_log "deps: dpkg-dev and debootstrap already installed"
    else
        apt_want --no-install-recommends "${missing[@]}"
    fi
    # Under `all`, cargo-deb comes from `cargo-tools` (scripts/test runs it in the background).
    [ "$COLLECT" = 1 ] || cargo_tool cargo-deb "$CARGO_DEB_VERSION" "cargo deb"
}

# cargo_tool CRATE VERSION|'' COMMAND: `cargo install --locked CRATE` unless COMMAND
# --version already prints "CRATE VERSION" (any version when VERSION is empty). Two
# installs at once are safe: cargo locks its install root, and the second finds the
# crate installed.
cargo_tool() {
    local crate="$1" version="$2" cmd="$3" have t0
    # shellcheck disable=SC2086
    have=$($cmd --version 2>/dev/null | head -n 1) || have=""
    if [ -n "$have" ] && { [ -z "$version" ] || [ "$have" = "$crate $version" ]; }; then
        dk_log "deps: $have already installed"
        return 0
    fi
    t0=$(dk_now)
    dk_log "deps: cargo install --locked $crate${version:+ $version} (once; log: $DK_LOG_DIR/deps-cargo.log)"
    if ! cargo install --locked --quiet "$crate" ${version:+--version "$version"} >>"$DK_LOG_DIR/deps-cargo.log" 2>&1; then
        dk_tail_file "$DK_LOG_DIR/deps-cargo.log" 30
        dk_die "deps: could not install $crate${version:+ $version}"
    fi
    dk_log "deps: installed $crate in $(dk_elapsed "$t0")s"
}

# cbindgen's version: the one ffi-c/include/deploykit.h is generated with (ffi-c/build.sh).
CBINDGEN_VERSION=$(sed -n 's/^CBINDGEN_VERSION=\([0-9.]*\).*/\1/p' "$DK_ROOT/ffi-c/build.sh")

deps_cargo_tools() {
    command -v cargo >/dev/null || dk_die "deps: cargo not found: install Rust (rustup) first"
    # In the order the suites need them: cbindgen (the C suite), cargo-deb, cargo-fuzz.
    cargo_tool cbindgen "$CBINDGEN_VERSION" cbindgen
    cargo_tool cargo-deb "$CARGO_DEB_VERSION" "cargo deb"
    cargo_tool cargo-fuzz "" "cargo fuzz"
}

# all: every group's missing Debian packages in one apt-get run.
deps_all() {
    COLLECT=1
    deps_build; deps_debian; deps_brokers; deps_jvm; deps_python; deps_browser; deps_fleet; deps_package
    COLLECT=0
    [ ${#APT_WANTED[@]} -eq 0 ] || apt_install "${APT_WANTED[@]}"
    [ ${#APT_WANTED_NR[@]} -eq 0 ] || apt_install --no-install-recommends "${APT_WANTED_NR[@]}"
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
        cargo-tools) deps_cargo_tools ;;
        all) deps_all ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        *) dk_die "deps.sh: unknown argument '$what' (build|debian|brokers|jvm|python|browser|fleet|package|cargo-tools|all)" ;;
    esac
}

main "$@"
