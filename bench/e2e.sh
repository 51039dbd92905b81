#!/usr/bin/env bash
# End-to-end benchmarks: our STOMP client beside stomp.py and a raw socket through
# RabbitMQ, and the embedded broker (dk-broker) beside RabbitMQ. One command:
#
#   bench/e2e.sh            # 5 interleaved rounds, N=300000 (about 8 min on 2 CPUs once built)
#   bench/e2e.sh --quick    # smoke run: 1 round, N=20000
#   bench/e2e.sh --no-readme --rounds 3 --n 100000   # a shorter run
#
# Prints the tables and writes them into bench/README.md between
# <!-- e2e:start --> and <!-- e2e:end --> (other sections are left alone); raw
# figures go to bench/e2e/target/e2e-results.json. Builds bench/e2e (its own
# cargo workspace) and dk-broker in release mode first. Needs RabbitMQ's STOMP
# on 127.0.0.1:61613 (started here via scripts/brokers.sh if it is not
# answering), /usr/bin/time and stomp.py (installed if missing). Only loopback
# addresses are used; every loop and wait is bounded.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ ! -x /usr/bin/time ]; then
    echo "[e2e] installing GNU time (/usr/bin/time)" >&2
    apt-get install -y time >&2 || { apt-get update >&2 && apt-get install -y time >&2; }
fi
if ! python3 -c 'import stomp' 2>/dev/null; then
    echo "[e2e] installing stomp.py" >&2
    python3 -m pip install --quiet stomp.py >&2
fi
if ! scripts/brokers.sh status rabbitmq >/dev/null 2>&1; then
    echo "[e2e] RabbitMQ is not answering; starting it" >&2
    scripts/brokers.sh start rabbitmq >&2
fi

exec python3 bench/e2e/run.py --command "bench/e2e.sh $*" "$@"
