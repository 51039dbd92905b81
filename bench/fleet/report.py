#!/usr/bin/env python3
"""The Fleet section of bench/README.md from a bench/fleet.sh run.

    report.py WORKDIR README COMMAND

WORKDIR holds one directory per fleet size (named N) with: up.txt (seconds to
bring the fleet up), pushes.txt and rollout.txt (the scenarios' output, whose
`FIGURES k=v ...` lines are read), s0.json, s1.json, s2.json (procstat.py
snapshots: after `up`, after the pushes, after the rollout), window.txt (seconds
between the snapshots: `pushes ROLL`). Prints the section and replaces the one
between <!-- fleet:start --> and <!-- fleet:end --> in README.
"""
import json
import os
import platform
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from readme_section import replace  # noqa: E402


def figures(path):
    """Every `FIGURES k=v ...` line of a scenario output, merged."""
    out = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("FIGURES "):
                    for kv in line.split()[1:]:
                        k, _, v = kv.partition("=")
                        try:
                            out[k] = float(v)
                        except ValueError:
                            out[k] = v
    except OSError:
        pass
    return out


def snap(d, name):
    with open(os.path.join(d, name)) as f:
        return json.load(f)


def by_key(s):
    return {(p["host"], p["name"], p["pid"]): p for p in s["procs"]}


def cpu_delta(a, b, pick):
    """Per process (matched by host, name, pid) CPU seconds between snapshots a and b."""
    ka, kb, hz = by_key(a), by_key(b), b["ticks_per_s"]
    out = []
    for k, p in kb.items():
        if pick(p) and k in ka:
            out.append((k, (p["cpu_ticks"] - ka[k]["cpu_ticks"]) / hz))
    return out


def mib(kib):
    return kib / 1024.0


def size_row(d):
    n = int(os.path.basename(d))
    up_s = float(open(os.path.join(d, "up.txt")).read().split()[0])
    win = open(os.path.join(d, "window.txt")).read().split()
    push_s, roll_s = float(win[0]), float(win[1])
    s0, s1, s2 = snap(d, "s0.json"), snap(d, "s1.json"), snap(d, "s2.json")
    fetch = lambda p: p["name"] == "dk-fetch" and p["host"].startswith("srv")
    agent = lambda p: p["name"] == "dk-agent" and p["host"].startswith("srv")
    beam = lambda p: p["name"] == "beam"
    fcpu = [c for _, c in cpu_delta(s0, s1, fetch)]
    acpu = [c for _, c in cpu_delta(s1, s2, agent)]
    mq_push = sum(c for _, c in cpu_delta(s0, s1, beam))
    mq_roll = sum(c for _, c in cpu_delta(s1, s2, beam))
    rss = lambda s, pick, key: [mib(p[key]) for p in s["procs"] if pick(p)]
    return {
        "n": n,
        "up_s": up_s,
        "push": figures(os.path.join(d, "pushes.txt")),
        "roll": figures(os.path.join(d, "rollout.txt")),
        "push_s": push_s,
        "roll_s": roll_s,
        "fetch_cpu": fcpu,
        "agent_cpu": acpu,
        "mq_cpu_push": mq_push,
        "mq_cpu_roll": mq_roll,
        "fetch_hwm": rss(s2, fetch, "hwm_kib"),
        "agent_hwm": rss(s2, agent, "hwm_kib"),
        "fetch_rss0": rss(s0, fetch, "rss_kib"),
        "agent_rss0": rss(s0, agent, "rss_kib"),
        "mq_rss": rss(s2, beam, "rss_kib"),
    }


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def main():
    work, readme, command = sys.argv[1], sys.argv[2], sys.argv[3]
    sizes = sorted((os.path.join(work, x) for x in os.listdir(work) if x.isdigit()), key=lambda p: int(os.path.basename(p)))
    rows = []
    for d in sizes:
        try:
            rows.append(size_row(d))
        except (OSError, ValueError, KeyError) as e:
            print(f"report.py: {d}: incomplete ({e}); left out", file=sys.stderr)
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        rev = "?"
    mem = next((int(l.split()[1]) // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal:")), 0)
    L = ["<!-- fleet:start -->", "## Fleet (network namespaces, a 3-node RabbitMQ cluster)", ""]
    L.append(
        "Every server is its own network namespace on one bridge with real `dk-fetch` and `dk-agent` processes "
        "(release build), real clones of 5 repos fetched over `git://` from the git host, and a failover URL "
        "over the three RabbitMQ nodes (clients spread round-robin); the git host pushes through the real "
        "post-receive hook; ctl runs `dk-deploy`. All of it shares this machine's cores, so the fan-out of "
        "one push (N `git fetch`es against one `git daemon`, N results through the cluster) competes for "
        "the same 2 vCPUs that a real fleet spreads over N machines."
    )
    L.append("")
    L.append(f"Command: `{command}` (scripts/fleet/up, scenarios `pushes` and `rollout`); deploykit at {rev}; "
             f"machine: {os.cpu_count()} vCPU, {mem} MiB RAM, {platform.release()}.")
    L.append("")
    nan = float("nan")
    L.append("| servers | up | discovery (median of 3) | push→fetched p50 / p99 / max | all fetched p99 | rollout (canary 1, `--batch 10%`) wall | servers' steps (critical path) | controller overhead | one after another (`--batch 1`) wall / overhead | ratio |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        p, o = r["push"], r["roll"]
        L.append(
            f"| {r['n']} | {r['up_s']:.0f} s | {o.get('discover_s', nan):.3f} s "
            f"| {p.get('p50_ms', nan):.0f} / {p.get('p99_ms', nan):.0f} / {p.get('max_ms', nan):.0f} ms "
            f"| {p.get('all_p99_ms', nan):.0f} ms "
            f"| {o.get('wall_s', nan):.2f} s ({o.get('ok', nan):.0f}/{r['n']} ok) | {o.get('steps_s', nan):.2f} s | **{o.get('overhead_s', nan):.2f} s** "
            f"| {o.get('serial_wall_s', nan):.2f} s / {o.get('serial_overhead_s', nan):.2f} s ({o.get('serial_ok', nan):.0f}/{r['n']} ok) "
            f"| **{o.get('serial_wall_s', nan) / max(o.get('wall_s', nan), 1e-9):.1f}×** |"
        )
    L.append("")
    L.append("| servers | dk-fetch RSS after up, mean / max | dk-fetch peak (VmHWM) max | dk-agent RSS after up, mean / max | dk-agent peak max | dk-fetch CPU per push, mean / max | dk-agent CPU per deploy, mean / max | RabbitMQ CPU (3 nodes) per push / rollout phase | RabbitMQ RSS per node, max |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        pushes = max(1.0, r["push"].get("pushes", 1.0))
        fc = [c / pushes * 1000 for c in r["fetch_cpu"]]
        ac = [c * 1000 / 2 for c in r["agent_cpu"]]  # the rollout phase deploys twice
        L.append(
            f"| {r['n']} | {mean(r['fetch_rss0']):.1f} / {max(r['fetch_rss0'], default=0):.1f} MiB | {max(r['fetch_hwm'], default=0):.1f} MiB "
            f"| {mean(r['agent_rss0']):.1f} / {max(r['agent_rss0'], default=0):.1f} MiB | {max(r['agent_hwm'], default=0):.1f} MiB "
            f"| {mean(fc):.1f} / {max(fc, default=0):.1f} ms | {mean(ac):.0f} / {max(ac, default=0):.0f} ms "
            f"| {r['mq_cpu_push'] / pushes * 1000:.0f} ms / {r['mq_cpu_roll']:.2f} s | {max(r['mq_rss'], default=0):.0f} MiB |"
        )
    L.append("")
    L.append(
        "*ratio*: the one-after-another wall time over the canary + 10 % rollout's, both measured in the same run. "
        "*push→fetched*: from the start of `git push` on the git host to a server's fetch result for that "
        "commit on `/topic/deploykit.fetch` (time-stamped on arrival on ctl), every (push, server) pair; pushes "
        "go one after another, the next once every server reported the last (as in the Fetch section). "
        "*all fetched*: per push, until the last server reported. *Rollout*: a new tag to every server with "
        "`--canary 1 --batch 10%`, each server running its real steps (checkout, link swap; no hooks); "
        "*servers' steps* is the critical path of the servers' own step durations (per batch, its slowest "
        "server), *overhead* = wall − steps: discovery, signing, the bus, scheduling, waiting for the "
        "slowest reply. CPU figures are utime+stime from /proc over each phase (the rollout phase: 3 discoveries and the two rollouts; dk-agent's figure is half of it); RSS is VmRSS, peak is VmHWM."
    )
    L.append("")
    L.append("The original's way and git-sync, for the same fleet (no measurement needed: both are fixed by design):")
    L.append("")
    L.append("| | how a push reaches N servers | how a tag reaches N servers |")
    L.append("|---|---|---|")
    L.append("| future-deploykit | fetch-on-commit daemons, one MCollective reply per server | `mco` deploy agent one node after another: N × (a server's steps + a round trip), the `--batch 1` column |")
    L.append("| kubernetes git-sync v4 | polls every `--period` (default 10 s): 5 s expected, 10 s worst, whatever N | no deploy step: the checkout *is* the release |")
    tg = []
    for r in rows:
        p, o = r["push"], r["roll"]
        worst = max(max(r["fetch_hwm"], default=0), max(r["agent_hwm"], default=0))
        tg.append(
            f"{r['n']} servers: push→fetched p99 {p.get('p99_ms', float('nan')):.0f} ms ({'<' if p.get('p99_ms', 1e9) < 1000 else '≥'} 1 s), "
            f"deploy overhead {o.get('overhead_s', float('nan')):.2f} s ({'<' if o.get('overhead_s', 1e9) < 2 else '≥'} 2 s), "
            f"largest daemon peak RSS {worst:.1f} MiB ({'≤' if worst <= 20 else '>'} 20 MiB)"
        )
    L.append("")
    L.append("Targets (push→fetched p99 < 1 s and deploy overhead < 2 s at 300 servers; no daemon over 20 MiB RSS): " + "; ".join(tg) + ".")
    L.append("<!-- fleet:end -->")
    section = "\n".join(L) + "\n"
    replace(readme, "fleet", section)
    print(section)


if __name__ == "__main__":
    main()
