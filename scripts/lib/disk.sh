# shellcheck shell=bash
# Free disk space for scripts/test: how much a run has, and whether the disk filled up.
# Source it after common.sh; do not run it. Safe under `set -euo pipefail`: nothing here
# fails its caller.
#
#   dk_free_mib PATH        MiB free on the filesystem holding PATH (its nearest existing parent)
#   disk_watch LABEL        log the free space now, and remember the least seen and where
#   disk_summary LOG_DIR    one line on the space the run had; if a log in LOG_DIR says
#                           "No space left on device", a loud line saying the disk filled up
#
# DISK_PATH (set by the caller; default DK_ROOT) is where the builds write.

DISK_PATH="${DISK_PATH:-$DK_ROOT}"
DISK_START_MIB=""
DISK_LEAST_MIB=""
DISK_LEAST_AT=""

# dk_free_mib PATH -> free MiB (available to this user) on PATH's filesystem, or "" if unknown.
dk_free_mib() {
    local p="$1"
    while [ ! -e "$p" ] && [ "$p" != / ]; do p=$(dirname -- "$p"); done
    df -Pm -- "$p" 2>/dev/null | awk 'NR == 2 { print $4 }' || true
}

# dk_gib MIB -> "12.3 GiB"
dk_gib() { awk -v m="$1" 'BEGIN { printf "%.1f GiB", m / 1024 }'; }

# disk_watch LABEL: log the free space before LABEL; keep the least seen.
disk_watch() {
    local free
    free=$(dk_free_mib "$DISK_PATH")
    [ -n "$free" ] || return 0
    [ -n "$DISK_START_MIB" ] || DISK_START_MIB="$free"
    if [ -z "$DISK_LEAST_MIB" ] || [ "$free" -lt "$DISK_LEAST_MIB" ]; then
        DISK_LEAST_MIB="$free"
        DISK_LEAST_AT="$1"
    fi
    dk_log "disk: $(dk_gib "$free") free under $DISK_PATH ($1)"
}

# disk_summary LOG_DIR: print what the run had; say so plainly if the disk filled up.
disk_summary() {
    local full
    if [ -n "$DISK_START_MIB" ]; then
        printf 'disk: %s free at the start, %s at the least (%s)\n' \
            "$(dk_gib "$DISK_START_MIB")" "$(dk_gib "$DISK_LEAST_MIB")" "$DISK_LEAST_AT"
    fi
    # (grep finds nothing on a good run: its status must not end a `set -eo pipefail` caller.)
    full=$(grep -rlsF 'No space left on device' -- "$1" | head -n 3 | tr '\n' ' ' || true)
    if [ -n "$full" ]; then
        printf '%s\n' "################################################################" \
            "# THE DISK FILLED UP during this run (\"No space left on device\" in" \
            "# ${full% }):" \
            "# the failures above are that, not the tests. This run needs about" \
            "# ${DK_DISK_NEED_GIB} GiB free under $DISK_PATH." \
            "################################################################"
    fi
}
