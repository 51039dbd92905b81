#!/usr/bin/env python3
"""Run a command and print each line of its stdout prefixed with the time it was read.

    stamp.py CMD [ARGS...]      ->  "<unix seconds, 6 decimals>\t<line>" per line

Used by scripts/fleet/scenario to time-stamp `dk-stomp listen --json` output
(the fetch results) as they arrive. SIGTERM/SIGINT stop the command too.
"""
import signal
import subprocess
import sys
import time


def main() -> int:
    child = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def stop(signum, _frame):
        child.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    out = sys.stdout
    for raw in child.stdout:
        out.write("%.6f\t%s" % (time.time(), raw.decode("utf-8", "replace")))
        out.flush()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
