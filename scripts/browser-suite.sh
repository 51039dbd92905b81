#!/usr/bin/env bash
# The browser suite: dk-web driven by a real headless Chromium (Debian's
# `chromium`) through Playwright for Python, and a push's whole journey through
# the real git hook, dk-jenkins and dk-notify; and dk-web's JSON API checked
# against its own OpenAPI document by schemathesis (tests/api).
#
#   scripts/browser-suite.sh [PYTEST ARGS...]
#
# What it does, each step only when needed:
#   1. apt-get install chromium if it is missing (scripts/lib/deps.sh browser; needs root)
#   2. the virtualenv .dk-test/venv (shared with the Python suite: scripts/lib/python-env.sh)
#      gets pytest, playwright and schemathesis from PyPI; no browser is downloaded:
#      Playwright is pointed at /usr/bin/chromium (DK_CHROMIUM overrides)
#   3. the deploykit Python package (the git hook runs it) if the venv lacks it: the
#      same maturin build as scripts/python-suite.sh (which refreshes it on every run)
#   4. cargo build -p deploykit-tools --bins --example web-fixture (embedded broker, 3
#      agents, 3 fetch daemons, dk-web with an API token; dk-jenkins and dk-notify)
#   5. pytest tests/browser tests/api (DK_API_EXAMPLES: examples per API operation, default 15)
#
# DK_SCREENSHOTS=DIR saves site.png, deploy.png and journey.png there (the committed ones
# in docs/screenshots/ come from `DK_SCREENSHOTS=docs/screenshots scripts/browser-suite.sh`).
# CARGO_TARGET_DIR is honoured.
# Logs of the set-up steps: .dk-test/logs/browser-*.log.
# The exit status is pytest's.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=scripts/lib/python-env.sh
. "$DK_ROOT/scripts/lib/python-env.sh"
cd "$DK_ROOT"

case "${1:-}" in
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

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
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD
dk_venv_pip browser-suite "$LOG" "pytest, playwright, schemathesis" pytest 'playwright>=1.40,<2' 'schemathesis>=4,<5'

# 3. The deploykit package, for the git hook (scripts/python-suite.sh installs it first in scripts/test).
dk_deploykit_package browser-suite "$LOG" --if-missing

# 4. The fixture, and the daemons the journey test runs.
cargo build --quiet -p deploykit-tools --bins --example web-fixture >>"$LOG" 2>&1 \
    || { dk_tail_file "$LOG" 40; dk_die "browser-suite: cargo build -p deploykit-tools --bins --example web-fixture failed"; }
dk_log "browser-suite: $("$CHROMIUM" --version 2>/dev/null | head -n 1); setup took $(dk_elapsed "$T0")s"

# 5. The tests.
set +e
DK_WEB_FIXTURE="$TARGET_DIR/debug/examples/web-fixture" DK_BIN_DIR="$TARGET_DIR/debug" DK_CHROMIUM="$CHROMIUM" \
    "$DK_VPY" -m pytest -q -p no:cacheprovider -ra tests/browser tests/api "$@"
rc=$?
set -e
exit "$rc"
