#!/usr/bin/env python3
"""Figures for scripts/fleet/scenario (reads the files a scenario run wrote).

    analyze.py latency RUN_DIR SERVERS...
        pushes.tsv (i repo branch rev t_start t_end) and results.log (stamped
        `dk-stomp listen --json` lines of /topic/deploykit.fetch):
        push->fetched per (push, server): from the push's start to the first
        successful fetch result of that server and repo whose new head is this
        push's commit or a later push's in the same repo (pushes are sequential and
        dk-fetch fetches every branch, so such a fetch holds this push too).
        Prints p50/p99/max and the longest gap between two fetch results of one
        server while pushes were flowing.

    analyze.py failover RUN_DIR FAULT_TS NODE LOGS...
        the daemons' JSON logs: which clients were on NODE at FAULT_TS, when each
        noticed (`STOMP connection lost`) and when it was ready again on another
        node (`STOMP client ready`, i.e. re-subscribed and confirmed).
        Prints one line per client and `detect_max=... ready_max=...`.
"""
import datetime
import json
import os
import sys


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(-(-p * len(xs) // 100)) - 1))
    return xs[k]


def load_pushes(run):
    pushes = []
    with open(os.path.join(run, "pushes.tsv")) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 6:
                continue
            pushes.append({"i": int(p[0]), "repo": p[1], "branch": p[2], "rev": p[3], "ts": float(p[4]), "te": float(p[5])})
    return pushes


def load_results(run):
    out = []
    with open(os.path.join(run, "results.log"), errors="replace") as f:
        for line in f:
            t, _, js = line.partition("\t")
            try:
                m = json.loads(js)
                body = json.loads(m["body"])
            except Exception:
                continue
            if not isinstance(body, dict) or "node" not in body:
                continue
            out.append((float(t), body))
    out.sort(key=lambda x: x[0])
    return out


def latency(run, servers):
    pushes = load_pushes(run)
    results = load_results(run)
    idx = {(p["repo"], p["rev"]): p["i"] for p in pushes}
    per = {}  # (node, repo) -> [(t, j)]
    times = {}  # node -> [t]
    failed = 0
    for t, r in results:
        if not r.get("ok"):
            failed += 1
            continue
        times.setdefault(r["node"], []).append(t)
        j = idx.get((r.get("repo"), r.get("new_head")))
        if j is not None:
            per.setdefault((r["node"], r["repo"]), []).append((t, j))
    lats, unmatched = [], 0
    worst = None
    for p in pushes:
        for s in servers:
            cand = [t for (t, j) in per.get((s, p["repo"]), []) if j >= p["i"] and t >= p["ts"]]
            if not cand:
                unmatched += 1
                continue
            lat = min(cand) - p["ts"]
            lats.append(lat)
            if worst is None or lat > worst[0]:
                worst = (lat, p["i"], s)
    t0 = min(p["ts"] for p in pushes)
    t1 = max(p["te"] for p in pushes)
    gap, gap_at = 0.0, None
    for s in servers:
        ts = [t0] + [t for t in times.get(s, []) if t0 <= t] + []
        for a, b in zip(ts, ts[1:]):
            if a <= t1 and b - a > gap:
                gap, gap_at = b - a, (s, a - t0)
    n = len(pushes)
    print(f"pushes={n} over {t1 - t0:.1f}s ({n / max(t1 - t0, 1e-9):.1f}/s); push duration p50={pct([p['te'] - p['ts'] for p in pushes], 50) * 1000:.0f}ms "
          f"max={max(p['te'] - p['ts'] for p in pushes) * 1000:.0f}ms")
    print(f"fetch results ok={sum(len(v) for v in times.values())} failed={failed}; (push,server) pairs measured={len(lats)} without a result={unmatched}")
    if lats:
        print(f"push->fetched p50={pct(lats, 50) * 1000:.0f}ms p99={pct(lats, 99) * 1000:.0f}ms max={max(lats) * 1000:.0f}ms (push #{worst[1]} on {worst[2]})")
    if gap_at:
        print(f"longest gap between fetch results of one server during the pushes: {gap:.2f}s ({gap_at[0]}, from +{gap_at[1]:.1f}s)")
    print(f"FIGURES p50_ms={pct(lats, 50) * 1000:.0f} p99_ms={pct(lats, 99) * 1000:.0f} max_ms={(max(lats) if lats else float('nan')) * 1000:.0f} gap_s={gap:.2f} unmatched={unmatched}")


def parse_ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def failover(run, fault_ts, node, logs):
    fault = float(fault_ts)
    detect, ready = [], []
    for path in logs:
        name = "/".join(path.split("/")[-3::2]).replace(".log", "")  # HOST/DAEMON
        events = []
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    j = json.loads(line)
                except Exception:
                    continue
                fields = j.get("fields", {})
                msg = fields.get("message", "")
                if msg in ("STOMP connection lost", "STOMP client ready"):
                    events.append((parse_ts(j["timestamp"]), msg, str(fields.get("endpoint", ""))))
        before = [e for e in events if e[0] < fault and e[1] == "STOMP client ready"]
        if not before or (":" not in before[-1][2]) or (node + ":") not in before[-1][2]:
            continue
        lost = next((e for e in events if e[0] >= fault and e[1] == "STOMP connection lost"), None)
        back = next((e for e in events if lost and e[0] >= lost[0] and e[1] == "STOMP client ready"), None)
        d = (lost[0] - fault) if lost else None
        r = (back[0] - fault) if back else None
        if d is not None:
            detect.append(d)
        if r is not None:
            ready.append(r)
        print(f"  {name}: on {before[-1][2] if not node else node} at the fault; lost after {'%.2fs' % d if d is not None else 'NEVER'}, "
              f"ready again after {'%.2fs' % r if r is not None else 'NEVER'}{(' on ' + back[2]) if back else ''}")
        if d is None or r is None:
            detect.append(float("inf"))
            ready.append(float("inf"))
    print(f"FIGURES clients={len([1 for _ in detect])} detect_max_s={max(detect) if detect else float('nan'):.2f} ready_max_s={max(ready) if ready else float('nan'):.2f}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "latency":
        latency(sys.argv[2], sys.argv[3:])
    elif cmd == "failover":
        failover(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
    else:
        sys.exit(f"unknown command {cmd}")
