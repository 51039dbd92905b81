#!/usr/bin/env bash
# dk-web Changes: /changes and a journey page with 1 000 pushes each fetched on 100
# servers, and the latency from a fetch result on the bus to the journey's SSE
# stream; writes the Changes section of bench/README.md. About a minute.
#   bench/changes.sh [--pushes N] [--servers N] [--rounds N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
cargo run --release --quiet --bin changes -- --readme "$here/README.md" "$@"
