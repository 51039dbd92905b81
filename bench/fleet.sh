#!/usr/bin/env bash
# The fleet at scale: scripts/fleet with 100 and 300 servers (one network namespace
# each, real dk-fetch and dk-agent processes, release build) on a 3-node RabbitMQ
# cluster; writes the Fleet section of bench/README.md. Not a test.
#
#   bench/fleet.sh                          # 100, then 300 servers
#   bench/fleet.sh --servers "50 100" --pushes 20 --no-readme
#
# Per size: `scripts/fleet/up N`; `scripts/fleet/scenario pushes` (pushes one after
# another, push->fetched on every server); `scripts/fleet/scenario rollout`
# (discovery, then a new tag to every server, canary 1 + batches of 10 %); CPU and
# RSS of every daemon and RabbitMQ node (bench/fleet/procstat.py) after `up`, after
# the pushes and after the rollout; `scripts/fleet/down`. The RSS measured at the
# first size sizes the next: a size whose projected memory does not fit in 80 % of
# MemAvailable is skipped, said on stderr. Needs root (network namespaces),
# rabbitmq-server, git, python3 (and, like the fleet suite, the deploykit Python
# package: .dk-test/venv or built by `up`). About 20 minutes for 100 + 300.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib/common.sh
. "$root/scripts/lib/common.sh"

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
SIZES="100 300"
PUSHES=30
README=1
while [ $# -gt 0 ]; do
    case "$1" in
        --servers) SIZES="${2:?--servers needs a list, e.g. \"100 300\"}"; shift 2 ;;
        --pushes) PUSHES="${2:?--pushes needs a number}"; shift 2 ;;
        --no-readme) README=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; exit 64 ;;
    esac
done
for n in $SIZES $PUSHES; do
    case "$n" in ''|*[!0-9]*) dk_die "bench/fleet.sh: '$n' is not a number" ;; esac
done
dk_need_root "bench/fleet.sh"

(cd "$root" && cargo build --release --quiet -p deploykit-tools --bin dk-fetch --bin dk-agent --bin dk-deploy --bin dk-stomp)
export DK_FLEET_BIN="${CARGO_TARGET_DIR:-$root/target}/release"
if [ -z "${DK_FLEET_VENV:-}" ] && [ -x "$root/.dk-test/venv/bin/python3" ] &&
    "$root/.dk-test/venv/bin/python3" -c 'import deploykit.hooks' 2>/dev/null; then
    export DK_FLEET_VENV="$root/.dk-test/venv"
fi
FLEET_RUN="${DK_FLEET_RUN:-/run/dk-fleet}"
work=$(mktemp -d /tmp/dk-fleet-bench-XXXXXX)
trap '"$root/scripts/fleet/down" >/dev/null 2>&1 || true; dk_log "bench/fleet.sh: raw figures kept in $work"' EXIT

avail_mib() { awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo; }
per_server_mib=""   # measured at the first size: dk-fetch + dk-agent peak RSS per server
for n in $SIZES; do
    if [ -n "$per_server_mib" ]; then
        need=$(( n * per_server_mib * 12 / 10 + 1024 ))
        if [ "$need" -gt $(( $(avail_mib) * 8 / 10 )) ]; then
            dk_warn "bench/fleet.sh: $n servers need ~${need} MiB (measured ${per_server_mib} MiB per server, +20 %, +1 GiB for the cluster); only $(avail_mib) MiB available: skipped"
            continue
        fi
    fi
    d="$work/$n"
    mkdir -p "$d"
    dk_log "bench/fleet.sh: $n servers"
    t0=$(dk_now)
    "$root/scripts/fleet/up" "$n" >"$d/up.log" 2>&1 || { tail -n 30 "$d/up.log" >&2; dk_die "scripts/fleet/up $n failed"; }
    dk_elapsed "$t0" >"$d/up.txt"
    python3 "$here/fleet/procstat.py" "$FLEET_RUN/marker" >"$d/s0.json"
    t1=$(dk_now)
    # a FAILed invariant is reported (the figures say how), not a reason to stop the run
    DK_FLEET_PUSHES="$PUSHES" "$root/scripts/fleet/scenario" pushes 2>&1 | tee "$d/pushes.txt" || true
    python3 "$here/fleet/procstat.py" "$FLEET_RUN/marker" >"$d/s1.json"
    t2=$(dk_now)
    "$root/scripts/fleet/scenario" rollout 2>&1 | tee "$d/rollout.txt" || true
    python3 "$here/fleet/procstat.py" "$FLEET_RUN/marker" >"$d/s2.json"
    # the scenarios' files (pushes, stamped results, dk-deploy output) and every failed fetch's log line
    cp -a "$FLEET_RUN/scenarios" "$d/" 2>/dev/null || true
    grep -h '"level":"\(WARN\|ERROR\)"' "$FLEET_RUN"/hosts/srv*/log/dk-fetch.log >"$d/fetch-warnings.log" 2>/dev/null || true
    printf '%s %s\n' "$(dk_elapsed "$t1")" "$(dk_elapsed "$t2")" >"$d/window.txt"
    per_server_mib=$(python3 - "$d/s2.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
peak = {}
for p in s["procs"]:
    if p["host"].startswith("srv") and p["name"] in ("dk-fetch", "dk-agent"):
        peak[p["name"]] = max(peak.get(p["name"], 0), p["hwm_kib"])
print(max(1, -(-sum(peak.values()) // 1024)))
PY
)
    "$root/scripts/fleet/down" >"$d/down.log" 2>&1 || dk_warn "scripts/fleet/down failed (see $d/down.log)"
done

if [ "$README" = 1 ]; then
    python3 "$here/fleet/report.py" "$work" "$here/README.md" "bench/fleet.sh${*:+ $*}"
else
    python3 "$here/fleet/report.py" "$work" /dev/null "bench/fleet.sh" 2>/dev/null || true
fi
