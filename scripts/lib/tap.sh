#!/usr/bin/env bash
# What the shell-driven suites (c-suite.sh, jvm-suite.sh) share: TAP lines with
# pass/fail counts, and an embedded dk-broker with a users file, stopped on exit.
# Source it after common.sh.

PASSED=0
FAILED=0
BROKER_PID=

# check STATUS NAME: one TAP line, counted.
check() {
    if [ "$1" = 0 ]; then
        printf 'ok - %s\n' "$2"
        PASSED=$((PASSED + 1))
    else
        printf 'not ok - %s\n' "$2"
        FAILED=$((FAILED + 1))
    fi
}

# finish: the closing `N passed, N failed` line; exits non-zero if anything failed.
finish() {
    printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
    [ "$FAILED" = 0 ]
    exit $?
}

tap_cleanup() {
    if [ -n "$BROKER_PID" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
}
trap tap_cleanup EXIT

# start_dk_broker DK_BROKER_BINARY WORKDIR LOGDIR: starts dk-broker on an ephemeral
# loopback port with user guest/guest, waits (bounded) for its "listening on" line
# and sets BROKER_PORT; on failure prints the log tail and finishes the suite.
start_dk_broker() {
    local bin="$1" work="$2" logs="$3"
    local log="$logs/dk-broker.log" users="$work/broker-users"
    (umask 077 && printf 'guest:guest\n' >"$users")
    "$bin" --listen 127.0.0.1:0 --users-file "$users" 2>"$log" &
    BROKER_PID=$!
    BROKER_PORT=
    for _ in $(seq 1 100); do
        BROKER_PORT="$(sed -n 's/^dk-broker listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)"
        [ -n "$BROKER_PORT" ] && break
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$BROKER_PORT" ]
    check $? "embedded broker (dk-broker, with a users file) started"
    [ -n "$BROKER_PORT" ] || { dk_tail_file "$log" 20; finish; }
}
