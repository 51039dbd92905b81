#!/usr/bin/env bash
# Runs a command at low CPU priority, for scripts/test's background builds:
#
#   setsid scripts/lib/background.sh NICE CMD [ARG...]
#
# With autogroup scheduling (kernel.sched_autogroup_enabled=1, Debian's default), the
# CPU is shared between sessions first and nice counts only within a session: a new
# session (setsid, so the run can stop the whole group) at nice 19 got as much CPU as
# the whole foreground run. So the session's autogroup gets NICE as well
# (/proc/self/autogroup), then CMD runs under `nice -n NICE`.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }
level="$1"
shift
if [ -w /proc/self/autogroup ]; then
    printf '%s\n' "$level" >/proc/self/autogroup 2>/dev/null || true
fi
exec nice -n "$level" "$@"
