#!/usr/bin/env bash
# The JVM notifier's cost to Jenkins (#17): time on the calling thread per build event
# (org.deploykit.notifier.Builds.fromEnv + BuildNotifier.offer, what the plugin's
# RunListener does), p50/p99/max with 16 threads at once and with one, and heap/RSS
# after the builds were sent, against a dk-broker of its own. Prints the figures;
# copy them into ffi-jvm/README.md and bench/README.md. About a minute.
#   bench/jvm-notifier.sh [--jar PATH] [--builds N] [--threads N]
# --jar: an existing deploykit.jar (e.g. .dk-test/jvm/deploykit.jar from
# scripts/jvm-suite.sh, debug library); default: build a release one with
# ffi-jvm/build-jar.sh --release. dk-broker: $CARGO_TARGET_DIR/debug/dk-broker
# (built if missing). The JVM runs with -Xmx256m (a Jenkins controller has more).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jar="" builds=10000 threads=16
while [ $# -gt 0 ]; do
    case "$1" in
        --jar) jar="$2"; shift 2 ;;
        --builds) builds="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "jvm-notifier.sh: unknown argument $1 (try --help)" >&2; exit 64 ;;
    esac
done
target="${CARGO_TARGET_DIR:-$root/target}"
work="$root/.dk-test/bench-jvm"
rm -rf "$work" && mkdir -p "$work/classes"
if [ -z "$jar" ]; then
    ffi-jvm/build-jar.sh --release --out "$work" >"$work/build-jar.log" 2>&1 || { tail -n 30 "$work/build-jar.log"; exit 1; }
    jar="$work/deploykit.jar"
fi
[ -x "$target/debug/dk-broker" ] || cargo build --quiet -p deploykit-tools --bin dk-broker
javac -d "$work/classes" -cp "$jar" bench/jvm/NotifierBench.java
"$target/debug/dk-broker" --listen 127.0.0.1:0 2>"$work/dk-broker.log" &
broker=$!
trap 'kill "$broker" 2>/dev/null || true' EXIT
port=""
for _ in $(seq 1 100); do
    port="$(sed -n 's/^dk-broker listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$work/dk-broker.log" | head -n 1)"
    [ -n "$port" ] && break
    sleep 0.1
done
[ -n "$port" ] || { cat "$work/dk-broker.log"; exit 1; }
echo "deploykit $(git rev-parse --short HEAD), $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), $(java -version 2>&1 | head -n 1), jar $jar"
echo "| callers | builds | p50 | p99 | max |"
echo "| --- | ---: | ---: | ---: | ---: |"
XDG_CACHE_HOME="$work/xdg-cache" java -Xmx256m -cp "$jar:$work/classes" NotifierBench "stomp://127.0.0.1:$port" "$builds" "$threads"
