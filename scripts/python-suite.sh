#!/usr/bin/env bash
# The Python binding and hooks suite: builds the `deploykit` Python package with
# maturin and runs pytest (ffi-python/tests) against real git, real Subversion and
# real brokers.
#
#   scripts/python-suite.sh [PYTEST ARGS...]
#
# What it does, each step only when needed:
#   1. apt-get install subversion if svnadmin is missing (needs root)
#   2. a virtualenv inside the clone at .dk-test/venv (gitignored) with pytest,
#      stomp.py and maturin from PyPI
#   3. pip install ./ffi-python into it (maturin compiles the extension once per
#      run, with the dev profile so it shares target/ with cargo's builds)
#   4. cargo build --bin dk-broker, then starts `dk-broker --listen 127.0.0.1:0`
#      (the port is read from its `dk-broker listening on ADDR` line) and stops
#      it at the end
#   5. runs pytest with DK_TEST_EMBEDDED set to that broker's URL
#
# Environment: DK_TEST_RABBITMQ (stomp://guest:guest@127.0.0.1:61613) adds the
# RabbitMQ runs; DK_REQUIRE_BROKERS=1 makes its absence a failure instead of a
# skip. PYTHON picks the interpreter the venv is made from (default python3).
# CARGO_TARGET_DIR is honoured. Logs of the build steps: .dk-test/logs/python-*.log.
# The exit status is pytest's (non-zero on any failure, or 1 if a step before failed).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=scripts/lib/python-env.sh
. "$DK_ROOT/scripts/lib/python-env.sh"
cd "$DK_ROOT"

case "${1:-}" in
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

VPY="$DK_VPY"
TARGET_DIR="${CARGO_TARGET_DIR:-$DK_ROOT/target}"
BUILD_LOG="$DK_LOG_DIR/python-build.log"
BROKER_LOG="$DK_LOG_DIR/python-dk-broker.log"
: >"$BUILD_LOG"
T0=$(dk_now)

# 1. Subversion (Debian's) for the svn hook tests.
if ! command -v svnadmin >/dev/null || ! command -v svnlook >/dev/null || ! command -v svn >/dev/null; then
    dk_need_root "installing subversion"
    dk_log "python-suite: apt-get install subversion"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update && apt-get install -y -q subversion; } >>"$BUILD_LOG" 2>&1 \
        || { dk_tail_file "$BUILD_LOG" 30; dk_die "python-suite: installing subversion failed"; }
fi

# 2. The virtualenv and the test tools (scripts/lib/python-env.sh, shared with the browser suite).
dk_venv_pip python-suite "$BUILD_LOG" "pytest, stomp, maturin" pytest 'stomp.py>=8,<10' 'maturin>=1.5,<2'

# 3. The package itself: one maturin build per run (dev profile: shares target/ with cargo).
dk_deploykit_package python-suite "$BUILD_LOG"

# 4. The embedded broker. Built with `cargo test --workspace`'s feature resolution
# (--workspace --tests: dev-dependencies unified, tokio with test-util), so after the cargo
# suite this only links; `-p deploykit-tools --bin dk-broker` alone recompiled tokio and
# everything above it (51 s).
cargo build --quiet --workspace --bins --tests >>"$BUILD_LOG" 2>&1 \
    || { dk_tail_file "$BUILD_LOG" 40; dk_die "python-suite: cargo build --bin dk-broker failed"; }
: >"$BROKER_LOG"
"$TARGET_DIR/debug/dk-broker" --listen 127.0.0.1:0 2>"$BROKER_LOG" >/dev/null &
BROKER_PID=$!
stop_broker() {
    kill "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
}
trap stop_broker EXIT
EMBEDDED=""
for _ in $(seq 1 300); do
    EMBEDDED=$(sed -n 's/.*listening on \(127\.0\.0\.1:[0-9][0-9]*\).*/stomp:\/\/\1/p' "$BROKER_LOG" | head -n 1)
    [ -n "$EMBEDDED" ] && break
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$EMBEDDED" ]; then
    dk_tail_file "$BROKER_LOG" 20
    dk_die "python-suite: dk-broker did not report its address"
fi
dk_log "python-suite: embedded broker at $EMBEDDED; setup took $(dk_elapsed "$T0")s"
[ -n "${DK_TEST_RABBITMQ:-}" ] && dk_log "python-suite: RabbitMQ at ${DK_TEST_RABBITMQ##*@}"

# 5. The tests.
set +e
DK_TEST_EMBEDDED="$EMBEDDED" DK_BIN_DIR="$TARGET_DIR/debug" DK_NATIVE_PROFILE=dev \
    "$VPY" -m pytest -q -p no:cacheprovider -ra ffi-python/tests "$@"
rc=$?
set -e
exit "$rc"
