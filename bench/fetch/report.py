#!/usr/bin/env python3
"""Writes the Fetch section of bench/README.md (between the fetch markers) from run.py's JSON."""
import json, os, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from readme_section import replace  # noqa: E402

res_file, readme, cmd = sys.argv[1], sys.argv[2], sys.argv[3]
res = json.load(open(res_file))
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
nproc = os.cpu_count()
mem = int(open("/proc/meminfo").readline().split()[1]) // 1024
git = subprocess.run(["git", "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()

GITSYNC, CRON = 5000.0, 30000.0  # expected latency = half the polling period (10 s, 60 s)
L = []
L.append("<!-- fetch:start -->")
L.append("## Fetch")
L.append("")
L.append("Push-to-fetched latency of `dk-fetch`: N daemons on one machine, each its own")
L.append("`dk-fetch` process (release build) with its own clone (mode `normal`) of one central")
L.append("bare repo, through the embedded broker (`dk-broker`) and through RabbitMQ, loopback")
L.append("only. Per push: commit, `git push`; when `git push` returns the driver takes t0 and")
L.append("publishes the JSON commit message (what the post-receive hook does); each daemon's")
L.append("`FetchResult` for that newrev on the results topic is timestamped on arrival")
L.append("(stomp.py). Latency = arrival - t0, so it includes the broker hop twice, the")
L.append("libgit2 fetch and the result publish. Pushes are sequential (next push once every")
L.append("daemon reported), 50 per row; the percentiles pool every daemon's sample (N x 50).")
L.append("The daemon's coalescing quiet window is 50 ms, but a lone push to an idle repo")
L.append("starts its fetch at once (leading edge), so the window adds no latency here.")
L.append("")
L.append(f"Command: `{cmd}` (driver `bench/fetch/run.py`, ~6 min).")
L.append(f"Machine: {nproc} vCPU ({cpu}), {mem} MiB RAM, {git}; RabbitMQ on 127.0.0.1:61613.")
L.append("")
L.append("| broker | daemons | samples | p50 ms | p99 ms | max ms | all-fetched p50 / p99 ms | peak RSS/daemon MiB (mean / max) | RSS after idle MiB (mean / max) | idle CPU/daemon % (mean / max, " + f"{res[0]['idle_s']:.0f} s) |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in res:
    miss = f" ({r['missing']} missing)" if r["missing"] else ""
    L.append(f"| {r['broker']} | {r['daemons']} | {r['samples']}{miss} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | "
             f"{r['all_p50_ms']:.1f} / {r['all_p99_ms']:.1f} | {r['hwm_mib_mean']:.1f} / {r['hwm_mib_max']:.1f} | "
             f"{r['rss_mib_mean']:.1f} / {r['rss_mib_max']:.1f} | {r['idle_cpu_pct_mean']:.3f} / {r['idle_cpu_pct_max']:.3f} |")
L.append("")
L.append('"all-fetched": per push, the time until the last of the N daemons reported.')
L.append('At 100 daemons the 2 vCPUs are the limit: 100 libgit2 fetches, 100 result')
L.append("publishes and the broker's fan-out all compete for two cores, so the latency grows")
L.append('with N (it is not a per-daemon cost). Peak RSS is VmHWM after the pushes; the')
L.append('idle figures come after 30 s with no pushes (heart-beats only, every 10 s).')
L.append("")
L.append("Peers (polling; expected latency = half the period, worst case = the period):")
L.append("")
nmax = max(r["daemons"] for r in res)
L.append(f"| | period | expected latency | worst | ratio expected / dk-fetch p50 (embedded / RabbitMQ, {nmax} daemons) |")
L.append("|---|---:|---:|---:|---:|")
def at(kind, n=None):
    n = n or max(r["daemons"] for r in res)
    for r in res:
        if r["broker"] == kind and r["daemons"] == n:
            return r
    return None
for name, period, exp in [("kubernetes git-sync v4, `--period` default", "10 s", GITSYNC), ("cron `git fetch` every minute", "60 s", CRON)]:
    ratios = []
    for kind in ("embedded", "rabbitmq"):
        r = at(kind)
        ratios.append(f"{exp / r['p50_ms']:.0f}x" if r else "-")
    L.append(f"| {name} | {period} | {exp/1000:.0f} s | {period} | {' / '.join(ratios)} |")
L.append("")
L.append("git-sync's default: `--period` / `$GITSYNC_PERIOD` = `10*time.Second` in")
L.append("kubernetes/git-sync `main.go` (v4). A cron job cannot run more often than once a minute.")
L.append("")
ok = [r for r in res if r["daemons"] == max(x["daemons"] for x in res)]
tgt = []
for r in ok:
    tgt.append(f"{r['broker']}: p99 {r['p99_ms']:.0f} ms {'<' if r['p99_ms'] < 1000 else '>='} 1 s, "
               f"RSS {r['rss_mib_max']:.1f} MiB {'<' if r['rss_mib_max'] < 15 else '>='} 15 MiB, idle CPU {r['idle_cpu_pct_mean']:.3f} %")
L.append("Targets (p99 < 1 s at 100 daemons; idle RSS < 15 MiB, ~0 % CPU per daemon): " + "; ".join(tgt) + ".")
L.append("<!-- fetch:end -->")
section = "\n".join(L) + "\n"

replace(readme, "fetch", section)
print(section)
