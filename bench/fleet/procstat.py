#!/usr/bin/env python3
"""CPU time and memory of every process a fleet's `up` recorded (bench/fleet.sh).

    procstat.py MARKER

Reads the fleet marker (`pid PID STARTTIME HOST NAME` lines), keeps the processes
still alive as recorded (same start time, so never a recycled PID), and prints one
JSON object: {"at": unix time, "ticks_per_s": N, "procs": [{host, name, pid,
cpu_ticks (utime+stime), rss_kib (VmRSS), hwm_kib (VmHWM)}]}. RabbitMQ nodes are
counted by their Erlang VM (recorded as `beam`).
"""
import json
import os
import sys
import time


def stat(pid):
    """(starttime, utime+stime) from /proc/PID/stat, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, starttime 22
    return int(fields[19]), int(fields[11]) + int(fields[12])


def mem(pid):
    """(VmRSS, VmHWM) in KiB."""
    out = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in out:
                    out[key] = int(val.split()[0])
    except OSError:
        pass
    return out["VmRSS"], out["VmHWM"]


def main():
    procs = []
    with open(sys.argv[1]) as f:
        for line in f:
            p = line.split()
            if len(p) != 5 or p[0] != "pid":
                continue
            pid, start, host, name = int(p[1]), int(p[2]), p[3], p[4]
            st = stat(pid)
            if st is None or st[0] != start:
                continue
            rss, hwm = mem(pid)
            procs.append({"host": host, "name": name, "pid": pid, "cpu_ticks": st[1], "rss_kib": rss, "hwm_kib": hwm})
    json.dump({"at": time.time(), "ticks_per_s": os.sysconf("SC_CLK_TCK"), "procs": procs}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
