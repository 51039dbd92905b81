#!/usr/bin/env bash
# dk-web: site page with 100 servers and 200 tags (TTFB, full page) and the
# live-update latency from an agent's step to the SSE stream; writes the Web UI
# section of bench/README.md. Needs git. About a minute.
#   bench/web.sh [--agents N] [--tags N] [--rounds N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
cargo run --release --quiet --bin web -- --readme "$here/README.md" "$@"
