#!/usr/bin/env bash
# The browser suite: dk-web driven by a real headless Chromium (Debian's
# `chromium`) through Playwright for Python; and dk-web's JSON API checked
# against its own OpenAPI document by schemathesis (tests/api).
#
#   scripts/browser-suite.sh [PYTEST ARGS...]
#
# What it does, each step only when needed:
#   1. apt-get install chromium if it is missing (scripts/lib/deps.sh browser; needs root)
#   2. the virtualenv .dk-test/venv (shared with the Python suite) gets pytest,
#      playwright and schemathesis from PyPI; no browser is downloaded: Playwright
#      is pointed at /usr/bin/chromium (DK_CHROMIUM overrides)
#   3. cargo build --example web-fixture (embedded broker, 3 agents, dk-web, an API token)
#   4. pytest tests/browser tests/api (DK_API_EXAMPLES: examples per API operation, default 15)
#
# DK_SCREENSHOTS=DIR saves site.png and deploy.png there (the committed ones in
# docs/screenshots/ come from `DK_SCREENSHOTS=docs/screenshots scripts/browser-suite.sh`).
# Logs of the set-up steps: .dk-test/logs/browser-*.log. The exit status is pytest's.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$DK_ROOT"

case "${1:-}" in
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

PYTHON="${PYTHON:-python3}"
VENV="$DK_ROOT/.dk-test/venv"
VPY="$VENV/bin/python"
TARGET_DIR="${CARGO_TARGET_DIR:-$DK_ROOT/target}"
LOG="$DK_LOG_DIR/browser-setup.log"
: >"$LOG"
T0=$(dk_now)
CHROMIUM="${DK_CHROMIUM:-/usr/bin/chromium}"

# 1. Debian's Chromium.
if [ ! -x "$CHROMIUM" ]; then
    "$DK_ROOT/scripts/lib/deps.sh" browser >>"$LOG" 2>&1 || { dk_tail_file "$LOG" 30; dk_die "browser-suite: installing chromium failed"; }
fi

# 2. Playwright (the Python package only; it drives the Chromium above).
if [ ! -x "$VPY" ]; then
    dk_log "browser-suite: creating $VENV"
    "$PYTHON" -m venv "$VENV" >>"$LOG" 2>&1 || { dk_tail_file "$LOG" 30; dk_die "browser-suite: $PYTHON -m venv failed (Debian: apt-get install python3-venv)"; }
fi
if ! "$VPY" -c 'import pytest, playwright, schemathesis' >/dev/null 2>&1; then
    dk_log "browser-suite: pip install pytest playwright schemathesis (into the venv; no browser download)"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$VPY" -m pip install --quiet --disable-pip-version-check pytest 'playwright>=1.40,<2' 'schemathesis>=4,<5' >>"$LOG" 2>&1 \
        || { dk_tail_file "$LOG" 30; dk_die "browser-suite: pip install failed (log: $LOG)"; }
fi

# 3. The fixture.
cargo build --quiet -p deploykit-tools --example web-fixture >>"$LOG" 2>&1 \
    || { dk_tail_file "$LOG" 40; dk_die "browser-suite: cargo build --example web-fixture failed"; }
dk_log "browser-suite: $("$CHROMIUM" --version 2>/dev/null | head -n 1); setup took $(dk_elapsed "$T0")s"

# 4. The tests.
set +e
DK_WEB_FIXTURE="$TARGET_DIR/debug/examples/web-fixture" DK_CHROMIUM="$CHROMIUM" \
    "$VPY" -m pytest -q -p no:cacheprovider -ra tests/browser tests/api "$@"
rc=$?
set -e
exit "$rc"
