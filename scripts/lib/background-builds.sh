#!/usr/bin/env bash
# The release and fuzz builds scripts/test runs in the background, at idle priority:
#
#   scripts/lib/background-builds.sh STEPS_FILE DIST_DIR FUZZ_TARGET_DIR
#
#   cargo-tools   scripts/lib/deps.sh cargo-tools (cargo-deb, cbindgen, cargo-fuzz; once)
#   package       scripts/package --fast --out DIST_DIR (what the install suite installs)
#   fuzz-build    scripts/fuzz --smoke --build-only (what the fuzz smoke runs)
#
# Every step runs even if an earlier one failed; each appends "STEP RC SECONDS" to
# STEPS_FILE when it ends. The exit status is 0 if every step passed.
set -uo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$DK_ROOT"

[ $# = 3 ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 64; }
STEPS="$1" DIST="$2" FUZZ_TARGET="$3"
FAILED=0

# step NAME CMD...: run CMD, record its status and time.
step() {
    local name="$1" t0 rc=0
    shift
    t0=$(dk_now)
    dk_log "background: $name"
    "$@" 8>&- || rc=$?
    printf '%s %s %s\n' "$name" "$rc" "$(dk_elapsed "$t0")" >>"$STEPS"
    dk_log "background: $name exited $rc after $(dk_elapsed "$t0")s"
    [ "$rc" = 0 ] || FAILED=1
}

# STEPS_FILE.lock is held (exclusive) until the package step ends: the install suite
# waits for that with `flock --shared`, while the fuzz build goes on. "locked" in
# STEPS_FILE says it is taken.
exec 8>"$STEPS.lock"
flock 8
echo locked >>"$STEPS"
step cargo-tools "$DK_ROOT/scripts/lib/deps.sh" cargo-tools
step package "$DK_ROOT/scripts/package" --fast --out "$DIST"
exec 8>&-
step fuzz-build env CARGO_TARGET_DIR="$FUZZ_TARGET" "$DK_ROOT/scripts/fuzz" --smoke --build-only
exit "$FAILED"
