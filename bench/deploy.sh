#!/usr/bin/env bash
# Deploy to 100 in-process agents on the embedded broker: canary + --batch 25 vs
# --batch 1 (the original's order), in one run; writes the Deploy section of
# bench/README.md. Needs git. About a minute.
#   bench/deploy.sh [--agents N] [--broker stomp://guest:guest@127.0.0.1:61613]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
cargo run --release --quiet --bin deploy -- --readme "$here/README.md" "$@"
