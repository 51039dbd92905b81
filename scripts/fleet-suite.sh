#!/usr/bin/env bash
# The fleet suite: deploykit across hosts on a clustered RabbitMQ, with faults.
#
#   scripts/fleet-suite.sh
#
# Brings up a small fleet with scripts/fleet/up (network namespaces on bridge
# br-dkf, 10.213.0.0/24: git, ctl, a 3-node RabbitMQ cluster mq1..mq3 and
# DK_FLEET_SERVERS servers, default 8, each running dk-fetch and dk-agent),
# runs the scenarios push-storm, hung-node, deploy-partition, agent-kill,
# deploy-cut, rogue and mixed one after another on it, and tears it down on every exit path (scripts/fleet/down
# removes only what `up` recorded). Needs root and Debian's ruby-stomp (mixed's
# Ruby subscriber; scripts/lib/deps.sh fleet). If namespaces cannot be made,
# `up` fails and so does the suite, loudly, like a broker that will not start.
#
# Each scenario prints one PASS/FAIL line per invariant; the closing line is
# `N passed, N failed` over those lines (a scenario that fails outside any
# invariant counts as one failure). RabbitMQ's net_ticktime is 10 s here
# (DK_FLEET_NET_TICKTIME), so a hung node is declared down in ~12 s instead of
# RabbitMQ's default ~60 s (see scripts/fleet/README.md). The binaries come from
# $CARGO_TARGET_DIR/debug (or DK_FLEET_BIN); the hook's Python package from
# .dk-test/venv when the Python suite built it there, else `up` builds it.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$DK_ROOT"

case "${1:-}" in
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

SERVERS="${DK_FLEET_SERVERS:-8}"
export DK_FLEET_NET_TICKTIME="${DK_FLEET_NET_TICKTIME:-10}"
if [ -z "${DK_FLEET_VENV:-}" ] && [ -x "$DK_ROOT/.dk-test/venv/bin/python3" ] &&
    "$DK_ROOT/.dk-test/venv/bin/python3" -c 'import deploykit.hooks' 2>/dev/null; then
    export DK_FLEET_VENV="$DK_ROOT/.dk-test/venv"
fi
PASSED=0
FAILED=0
closing() {
    local rc=$?
    "$DK_ROOT/scripts/fleet/down" || { dk_warn "fleet-suite: scripts/fleet/down failed"; FAILED=$((FAILED + 1)); }
    printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
    if [ "$FAILED" = 0 ] && [ "$rc" = 0 ]; then exit 0; else exit 1; fi
}
trap closing EXIT

# A fleet left behind by an interrupted run is removed first (only what its marker lists).
"$DK_ROOT/scripts/fleet/down" >/dev/null 2>&1 || true

if ! "$DK_ROOT/scripts/fleet/up" "$SERVERS"; then
    dk_warn "fleet-suite: scripts/fleet/up failed (root and network namespaces are required)"
    FAILED=$((FAILED + 1))
    exit 1
fi

out="$DK_LOG_DIR/fleet-scenario.out"
for scenario in push-storm hung-node deploy-partition agent-kill deploy-cut rogue mixed; do
    rc=0
    "$DK_ROOT/scripts/fleet/scenario" "$scenario" | tee "$out" || rc=$?
    p=$(grep -c '^PASS ' "$out" || true)
    f=$(grep -c '^FAIL ' "$out" || true)
    if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
        dk_warn "fleet-suite: scenario $scenario exited $rc without a FAIL line: counted as 1 failure"
        f=1
    fi
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
done
[ "$FAILED" = 0 ]
