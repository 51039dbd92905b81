# shellcheck shell=bash
# Shared helpers for scripts/*. Source it; do not run it.
#
# Sets DK_ROOT (repo root) and DK_LOG_DIR (default $DK_ROOT/.dk-test/logs,
# gitignored) and provides logging helpers. Nothing here interpolates data into
# a command string: every external command is run with an argument vector.

DK_ROOT="${DK_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
DK_LOG_DIR="${DK_LOG_DIR:-$DK_ROOT/.dk-test/logs}"
export DK_ROOT DK_LOG_DIR
mkdir -p "$DK_LOG_DIR"

dk_ts() { date +%H:%M:%S; }
dk_log() { printf '[%s] %s\n' "$(dk_ts)" "$*" >&2; }
dk_warn() { printf '[%s] WARNING: %s\n' "$(dk_ts)" "$*" >&2; }
dk_die() {
    printf '\n[%s] ERROR: %s\n\n' "$(dk_ts)" "$*" >&2
    exit 1
}
# Seconds since the epoch with a fraction, for timings.
dk_now() { date +%s.%N; }
# dk_elapsed START -> "12.3"
dk_elapsed() { awk -v s="$1" -v e="$(dk_now)" 'BEGIN { printf "%.1f", e - s }'; }

dk_need_root() {
    [ "$(id -u)" = 0 ] || dk_die "$1 needs root (installs Debian packages / starts system services)"
}

# dk_tail_file FILE [LINES]: print the tail of a log file framed, if it exists.
dk_tail_file() {
    local f="$1" n="${2:-60}"
    if [ -r "$f" ]; then
        printf '%s\n' "----- last $n lines of $f -----" >&2
        tail -n "$n" -- "$f" >&2 || true
        printf '%s\n' "----- end of $f -----" >&2
    else
        printf '%s\n' "(no log file $f)" >&2
    fi
}
