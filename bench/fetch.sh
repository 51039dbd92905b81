#!/usr/bin/env bash
# dk-fetch push-to-fetched latency for 1, 10 and 100 daemons, through dk-broker
# and RabbitMQ (127.0.0.1:61613, guest/guest); writes the Fetch section of
# bench/README.md. Needs git, python3 with stomp.py. ~6 minutes.
#   bench/fetch.sh [extra run.py args, e.g. --counts 1,10 --idle 5]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
(cd "$root" && cargo build --release --bin dk-fetch --bin dk-broker)
out=$(mktemp /tmp/dk-fetch-bench-XXXXXX.json)
trap 'rm -f "$out"' EXIT
python3 "$here/fetch/run.py" --bin "$root/target/release" --json "$out" "$@"
python3 "$here/fetch/report.py" "$out" "$here/README.md" "bench/fetch.sh${*:+ $*}"
