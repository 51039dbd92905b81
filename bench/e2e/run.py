#!/usr/bin/env python3
"""Runs the end-to-end benchmarks and writes the report; called by bench/e2e.sh.

usage: run.py [--rounds 3] [--n 100000] [--rounds-pingpong 2000] [--quick] [--no-readme]
              [--out FILE.json]

Every case is its own process under `/usr/bin/time -v` (client CPU and peak RSS);
cases are interleaved round by round and the median round is reported, so a
drifting load on the machine hits every client alike. The tables go to stdout
and, unless --no-readme, into bench/README.md between the e2e markers.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent  # bench/e2e
ROOT = HERE.parent.parent  # repository root
README = ROOT / "bench" / "README.md"
START, END = "<!-- e2e:start -->", "<!-- e2e:end -->"

RABBIT = dict(addr="127.0.0.1:61613", login="guest", passcode="guest", vhost="/")
SIZE = 1024
SINK = "/topic/dk-bench-sink"  # no subscriber: RabbitMQ routes and drops, nothing piles up
PC_QUEUE = "/queue/dk-bench-pc"
PING, PONG = "/queue/dk-bench-ping", "/queue/dk-bench-pong"

# Run order within a round; a tuple's cases are compared with each other.
ORDER = [
    ("pub_ours_one", "pub_raw_one"),
    ("pub_ours_batch", "pub_raw_batch", "pub_ours_many", "pub_raw_build"),
    ("pub_ours_batch_mt",),
    ("pub_stomppy",),
    ("pc_ours", "pc_raw", "pc_codec"),
    ("emb_ours", "emb_raw"),
    ("pc_ours_mt",),
    ("pc_stomppy",),
    ("pp_ours", "pp_raw"),
    ("emb_pp_ours", "emb_pp_raw"),
    ("pp_ours_mt",),
    ("pp_stomppy",),
]

GROUPS = {"pub": "publish", "pc": "pubsub", "pp": "pingpong", "emb": "embedded"}

TARGETS = {
    "ratio": 0.95,
    # CPU per message as ratios to the raw socket in the same run (issue 18).
    "cpu_one": 1.3,
    "cpu_batch": 1.3,
    "cpu_pc": 1.1,
    "p50": 1.15,
    "p99": 1.3,
    "rss_mib": 8.0,
    "embedded": 5.0,
}


def log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cargo_build(args: list[str], cwd: Path, binary: str, target_dir: Path | None = None) -> Path:
    """Builds with cargo and returns the path of `binary` from cargo's JSON messages."""
    cmd = ["cargo", "build", "--release", "--message-format=json-render-diagnostics", *args]
    env = dict(os.environ)
    if target_dir is not None:
        env["CARGO_TARGET_DIR"] = str(target_dir)
    log(f"building {binary}: {shlex.join(cmd)} (in {cwd})")
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"e2e: build of {binary} failed")
    exe = None
    for line in p.stdout.splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == binary:
            exe = m["executable"]
    if not exe:
        raise SystemExit(f"e2e: cargo did not report the {binary} executable")
    return Path(exe)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def source_tree(at: str | None) -> tuple[Path, str]:
    """Where to build deploykit from, and how the report names it.

    Without `at`: this working tree. With `at`: a `git archive` of that revision in
    bench/e2e/target/src-REV (this bench's own sources copied in, so any revision
    can be measured with today's benchmark).
    """
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    if not at:
        dirty = git("status", "--porcelain", "--", "core", "tools", "Cargo.toml", "Cargo.lock")
        return ROOT, f"working tree at {head}" + (" with uncommitted changes in core/ or tools/" if dirty else "")
    rev = git("rev-parse", "--short", at)
    if not rev:
        raise SystemExit(f"e2e: unknown revision {at!r}")
    dst = HERE / "target" / f"src-{rev}"
    if not (dst / "core").exists():
        dst.mkdir(parents=True, exist_ok=True)
        log(f"exporting {rev} into {dst.relative_to(ROOT)}")
        archive = subprocess.run(["git", "archive", "--format=tar", rev], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(dst)], input=archive.stdout, check=True)
    e2e = dst / "bench" / "e2e"
    (e2e / "src").mkdir(parents=True, exist_ok=True)
    for name in ("Cargo.toml", "Cargo.lock", "src/main.rs"):
        if (HERE / name).exists():
            (e2e / name).write_bytes((HERE / name).read_bytes())
    return dst, f"commit {rev} (git archive)"


def machine() -> dict:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024 // 1024} GiB"
    except OSError:
        pass
    rabbit = "?"
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"], capture_output=True, text=True)
        rabbit = out.stdout.strip() or "?"
    except OSError:
        pass
    try:
        import stomp  # noqa: PLC0415

        stomppy = ".".join(str(x) for x in stomp.__version__) if isinstance(stomp.__version__, tuple) else str(stomp.__version__)
    except Exception:  # noqa: BLE001
        stomppy = "?"
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.date.today().isoformat(),
        "nproc": os.cpu_count(),
        "cpu": model,
        "mem": mem,
        "kernel": platform.release(),
        "rabbitmq": rabbit,
        "stomp.py": stomppy,
        "rustc": rustc,
        "python": platform.python_version(),
    }


def cpu_busy(secs: float = 1.0) -> float:
    """Share of all CPUs (0-100) busy over `secs`, from /proc/stat."""
    def sample():
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
        idle = f[3] + (f[4] if len(f) > 4 else 0)
        return sum(f), idle
    t0, i0 = sample()
    time.sleep(secs)
    t1, i1 = sample()
    return 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))


def run_timed(argv: list[str], timeout: float = 180.0) -> dict:
    """Runs argv under /usr/bin/time -v; returns its JSON line plus cpu_s, rss_kib."""
    with tempfile.NamedTemporaryFile("w+", suffix=".time") as tf, tempfile.TemporaryFile("w+") as out, \
            tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(["/usr/bin/time", "-v", "-o", tf.name, *argv], stdout=out, stderr=err,
                             start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(p.pid, signal.SIGKILL)
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.02)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        tf.seek(0)
        tv = tf.read()
    if p.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {p.returncode}: {stderr.strip()[-2000:]}")
    res = json.loads(stdout.strip().splitlines()[-1])

    def field(name: str) -> float:
        m = re.search(rf"^\s*{re.escape(name)}:\s*([0-9.]+)\s*$", tv, re.M)
        if not m:
            raise RuntimeError(f"/usr/bin/time -v printed no {name!r}: {tv[-500:]}")
        return float(m.group(1))

    res["time_user_s"] = field("User time (seconds)")
    res["time_sys_s"] = field("System time (seconds)")
    res["rss_kib"] = int(field("Maximum resident set size (kbytes)"))
    # The same user+sys as time -v prints, at microsecond resolution (time -v rounds to
    # 10 ms): rusage of the time process, whose only child is the client (time itself
    # adds about a millisecond).
    res["cpu_s"] = ru.ru_utime + ru.ru_stime
    return res


class Case:
    def __init__(self, key: str, group: str, label: str, argv: list[str]):
        self.key, self.group, self.label, self.argv = key, group, label, argv
        self.runs: list[dict] = []


def rabbit_queues_purge() -> None:
    """Empties the benchmark queues if an interrupted earlier run left messages in them."""
    try:
        out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "messages"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        log("rabbitmqctl not usable; not checking the benchmark queues for leftovers")
        return
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("dk-bench-") and parts[1].isdigit() and int(parts[1]) > 0:
            log(f"purging {parts[1]} leftover messages from {parts[0]}")
            subprocess.run(["rabbitmqctl", "-q", "purge_queue", parts[0]], capture_output=True, timeout=60)


def start_dk_broker(exe: Path) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([str(exe), "--listen", "127.0.0.1:0", "--max-queue-len", "1000000"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, NO_COLOR="1", RUST_LOG="warn"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        m = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        if m:
            # Keep draining its stderr so a chatty broker never blocks on a full pipe.
            import threading  # noqa: PLC0415

            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, m.group(1)
    p.kill()
    raise SystemExit("e2e: dk-broker did not report its address")


def median_run(c: Case, key: str, pick=statistics.median) -> float:
    vals = [r[key] for r in c.runs if r.get(key) is not None]
    return pick(vals) if vals else float("nan")


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}".replace(",", " ")


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--pings", type=int, default=2000)
    ap.add_argument("--latency-rounds", type=int, default=9, help="rounds of the (short) ping-pong cases")
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="1 round, N=20000, 500 pings: a smoke run")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--at", metavar="REV", help="measure deploykit as of git revision REV (default: the working tree)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECS",
                    help="wait up to SECS for the machine to be idle (< 10%% CPU busy) before measuring")
    ap.add_argument("--out", default=str(HERE / "target" / "e2e-results.json"))
    ap.add_argument("--command", default="bench/e2e.sh", help="how this run was invoked (for the report)")
    ap.add_argument("--render-only", metavar="FILE.json",
                    help="do not measure: rewrite the report from the results FILE of an earlier run")
    a = ap.parse_args()
    a.command = a.command.strip()
    if a.render_only:
        return render_saved(a, Path(a.render_only))
    if a.quick:
        a.rounds, a.latency_rounds, a.n, a.pings, a.warmup = 1, 1, 20_000, 500, 100
    t_start = time.monotonic()

    src, a.source = source_tree(a.at)
    if src == ROOT:
        dk_e2e = cargo_build([], HERE, "dk-e2e")
        dk_broker = cargo_build(["-p", "deploykit-tools", "--bin", "dk-broker"], ROOT, "dk-broker")
    else:
        dk_e2e = cargo_build([], src / "bench" / "e2e", "dk-e2e", HERE / "target")
        dk_broker = cargo_build(["-p", "deploykit-tools", "--bin", "dk-broker"], src, "dk-broker",
                                HERE / "target" / "workspace")
    stomppy = [sys.executable, str(HERE / "stomppy_bench.py")]
    rabbit_queues_purge()

    def rab(*extra: str) -> list[str]:
        return [
            "--addr", RABBIT["addr"], "--login", RABBIT["login"], "--passcode", RABBIT["passcode"],
            "--vhost", RABBIT["vhost"], "--size", str(SIZE), *extra]

    n = str(a.n)
    pp = ["--rounds", str(a.pings), "--warmup", str(a.warmup), "--dest", PING, "--reply", PONG]
    E = str(dk_e2e)
    cases = [
        Case("pub_ours_one", "publish", "deploykit, one by one (send, then yield)", [E, "publish", "--client", "ours", "--mode", "one", *rab("--n", n, "--dest", SINK)]),
        Case("pub_raw_one", "publish", "raw socket, one write per message", [E, "publish", "--client", "raw", "--mode", "one", *rab("--n", n, "--dest", SINK)]),
        Case("pub_ours_batch", "publish", "deploykit, batched", [E, "publish", "--client", "ours", "--mode", "batch", *rab("--n", n, "--dest", SINK)]),
        Case("pub_ours_batch_mt", "publish", "deploykit, batched, multi-thread runtime", [E, "publish", "--client", "ours", "--mode", "batch", "--rt", "multi", *rab("--n", n, "--dest", SINK)]),
        Case("pub_raw_batch", "publish", "raw socket, 64 messages per write", [E, "publish", "--client", "raw", "--mode", "batch", "--batch", "64", *rab("--n", n, "--dest", SINK)]),
        Case("pub_ours_many", "publish", "deploykit, `send_many` of 64 at a time", [E, "publish", "--client", "ours", "--mode", "many", "--batch", "64", *rab("--n", n, "--dest", SINK)]),
        Case("pub_raw_build", "publish", "raw socket, 64 per write, each frame built into the buffer", [E, "publish", "--client", "raw", "--mode", "build", "--batch", "64", *rab("--n", n, "--dest", SINK)]),
        Case("pub_stomppy", "publish", "stomp.py", [*stomppy, "publish", *rab("--n", n, "--dest", SINK)]),
        Case("pc_ours", "pubsub", "deploykit", [E, "pubsub", "--client", "ours", *rab("--n", n, "--dest", PC_QUEUE)]),
        Case("pc_codec", "pubsub", "deploykit's codec alone: the consumer decodes its own socket in the task that counts (no connection task, no inbox)",
             [E, "pubsub", "--client", "ours", "--mode", "codec", *rab("--n", n, "--dest", PC_QUEUE)]),
        Case("pc_ours_mt", "pubsub", "deploykit, multi-thread runtime", [E, "pubsub", "--client", "ours", "--rt", "multi", *rab("--n", n, "--dest", PC_QUEUE)]),
        Case("pc_raw", "pubsub", "raw socket (one thread polling both sockets, 64 per write; reader counts NULs)", [E, "pubsub", "--client", "raw", "--batch", "64", *rab("--n", n, "--dest", PC_QUEUE)]),
        Case("pc_stomppy", "pubsub", "stomp.py", [*stomppy, "pubsub", *rab("--n", n, "--dest", PC_QUEUE)]),
        Case("pp_ours", "pingpong", "deploykit", [E, "pingpong", "--client", "ours", *rab(*pp)]),
        Case("pp_ours_mt", "pingpong", "deploykit, multi-thread runtime", [E, "pingpong", "--client", "ours", "--rt", "multi", *rab(*pp)]),
        Case("pp_raw", "pingpong", "raw socket", [E, "pingpong", "--client", "raw", *rab(*pp)]),
        Case("pp_stomppy", "pingpong", "stomp.py", [*stomppy, "pingpong", *rab(*pp)]),
    ]
    emb_cases = [
        Case("emb_ours", "embedded", "deploykit via dk-broker", None),
        Case("emb_raw", "embedded", "raw socket via dk-broker", None),
        Case("emb_pp_ours", "embedded", "deploykit ping-pong via dk-broker", None),
        Case("emb_pp_raw", "embedded", "raw socket ping-pong via dk-broker", None),
    ]

    broker, baddr = start_dk_broker(dk_broker)
    log(f"dk-broker ({dk_broker}) listening on {baddr}")
    emb_args = ["--addr", baddr, "--login", "bench", "--passcode", "bench", "--vhost", "/", "--size", str(SIZE),
                "--n", n, "--dest", "/queue/dk-bench-pc"]
    emb_cases[0].argv = [E, "pubsub", "--client", "ours", *emb_args]
    emb_cases[1].argv = [E, "pubsub", "--client", "raw", "--batch", "64", *emb_args]
    emb_pp = ["--addr", baddr, "--login", "bench", "--passcode", "bench", "--vhost", "/", "--size", str(SIZE), *pp]
    emb_cases[2].argv = [E, "pingpong", "--client", "ours", *emb_pp]
    emb_cases[3].argv = [E, "pingpong", "--client", "raw", *emb_pp]
    busy0 = cpu_busy()
    waited = 0.0
    while busy0 >= 10 and waited < a.wait_quiet:
        log(f"machine {busy0:.0f}% busy; waiting for it to be idle ({waited:.0f}/{a.wait_quiet:.0f} s)")
        time.sleep(4)
        waited += 5
        busy0 = cpu_busy()
    log(f"CPU busy before measuring: {busy0:.0f}%")
    load0 = os.getloadavg()
    try:
        by_key = {c.key: c for c in cases + emb_cases}
        for r in range(max(a.rounds, a.latency_rounds)):
            for group in ORDER:
                latency = all(k.startswith(("pp_", "emb_pp_")) for k in group)
                if r >= (a.latency_rounds if latency else a.rounds):
                    continue
                # Compared cases run back to back, in alternating order, so a load that
                # drifts during the run weighs on both sides of a ratio alike.
                for key in (group if r % 2 == 0 else tuple(reversed(group))):
                    c = by_key[key]
                    log(f"round {r + 1}/{max(a.rounds, a.latency_rounds)}: {c.group}: {c.label}")
                    res = run_timed(c.argv)
                    res["round"] = r + 1
                    c.runs.append(res)
    finally:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(10)
        except subprocess.TimeoutExpired:
            broker.kill()
    load1 = os.getloadavg()
    busy1 = cpu_busy()
    a.busy = (busy0, busy1)
    elapsed = time.monotonic() - t_start

    mach = machine()
    by = {c.key: c for c in cases + emb_cases}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({
        "machine": mach, "n": a.n, "rounds": a.rounds, "pings": a.pings, "warmup": a.warmup,
        "load_before": load0, "load_after": load1, "elapsed_s": elapsed, "busy": list(a.busy),
        "source": a.source, "command": a.command, "latency_rounds": a.latency_rounds,
        "cases": {c.key: {"label": c.label, "argv": c.argv, "runs": c.runs} for c in cases + emb_cases},
    }, indent=1))

    report = render(a, mach, by, load0, load1, elapsed)
    print(report)
    if not a.no_readme:
        write_readme(report)
        log(f"wrote {README.relative_to(ROOT)} (between {START} and {END})")
    log(f"raw results: {a.out}; whole run {elapsed:.0f} s")


def render_saved(a, path: Path) -> None:
    """Re-renders the report of an earlier run from its results file."""
    d = json.loads(path.read_text())
    by = {}
    for key, c in d["cases"].items():
        case = Case(key, GROUPS[key.split("_")[0]], c["label"], c["argv"])
        case.runs = c["runs"]
        by[key] = case
    a.n, a.rounds, a.pings, a.warmup = d["n"], d["rounds"], d["pings"], d["warmup"]
    a.latency_rounds = d.get("latency_rounds", a.rounds)
    a.busy = tuple(d.get("busy", (float("nan"), float("nan"))))
    a.source = d.get("source", "?")
    a.command = d.get("command", a.command)
    report = render(a, d["machine"], by, d["load_before"], d["load_after"], d["elapsed_s"])
    print(report)
    if not a.no_readme:
        write_readme(report)
        log(f"wrote {README.relative_to(ROOT)} from {path}")


def render(a, mach: dict, by: dict, load0, load1, elapsed: float) -> str:
    T = TARGETS
    N = a.n

    def med(key: str, field: str) -> float:
        return median_run(by[key], field)

    def spread(key: str, field: str) -> str:
        vals = [r[field] for r in by[key].runs]
        if len(vals) < 2:
            return ""
        return f" ({fmt_rate(min(vals))}–{fmt_rate(max(vals))})"

    def pratio(key: str, ref: str, field: str) -> float:
        """Median over rounds of key/ref, each round's pair measured back to back."""
        ref_by_round = {r["round"]: r[field] for r in by[ref].runs}
        vals = [r[field] / ref_by_round[r["round"]] for r in by[key].runs if r["round"] in ref_by_round]
        return statistics.median(vals) if vals else float("nan")

    def cpu_us(key: str) -> float:
        return med(key, "cpu_s") / by[key].runs[0]["count"] * 1e6

    def loop_us(key: str) -> float:
        return med(key, "loop_cpu_s") / by[key].runs[0]["count"] * 1e6

    def rss(key: str) -> float:
        return max(r["rss_kib"] for r in by[key].runs) / 1024

    def wpm(key: str) -> str:
        w = med(key, "writes")
        return "—" if w != w else f"{w / by[key].runs[0]['count']:.2f}"

    def wakes(key: str) -> str:
        w = med(key, "waits")
        return "—" if w != w else f"{w / by[key].runs[0]['count'] * 1000:.1f}"

    L = []
    L.append(START)
    L.append("## End-to-end (through RabbitMQ)")
    L.append("")
    L.append("Produced by `" + a.command + "` (deploykit: " + a.source + ") on "
             f"{mach.get('date') or datetime.date.today().isoformat()}: {mach['nproc']} CPUs ({mach['cpu']}), {mach['mem']} RAM, "
             f"Linux {mach['kernel']}, RabbitMQ {mach['rabbitmq']} (STOMP plugin, 127.0.0.1:61613), "
             f"stomp.py {mach['stomp.py']} on Python {mach['python']}, {mach['rustc']}. "
             f"{a.rounds} rounds ({a.latency_rounds} for ping-pong); compared cases run back to back in alternating order, ratios are the median of the "
             f"per-round ratios, other figures the median over rounds (throughput min–max in brackets); "
             f"N = {fmt_rate(N)} messages of {SIZE} B per throughput run, {a.pings} round trips after {a.warmup} "
             f"of warm-up per latency run. Load average before/after: {load0[0]:.2f}/{load1[0]:.2f}; CPU busy "
             f"(all CPUs, 1 s sample, RabbitMQ idle and ActiveMQ running) before/after: {a.busy[0]:.0f}%/{a.busy[1]:.0f}%"
             f"{' — the machine was busy with other work, so figures are noisier than usual' if a.busy[0] >= 15 else ''}. "
             f"Whole run: {elapsed:.0f} s.")
    L.append("")
    L.append("Clients, each case its own process under `/usr/bin/time -v`:")
    L.append("- **deploykit**: `bench/e2e` (`dk-e2e`), `deploykit::stomp::Client` as an application uses it, on a "
             "current-thread tokio runtime unless marked multi-thread (2 workers here).")
    L.append("- **raw socket**: the same binary writing pre-encoded SEND frames (byte-identical to ours) and "
             "counting incoming frames by their NUL, parsing nothing, on blocking sockets (publish → consume: "
             "non-blocking, one thread with poll(2)): the least a client can cost, so its rate is RabbitMQ's own "
             "ceiling on this machine. Its batched case resends one prebuilt 64-frame chunk; *each frame built "
             "into the buffer* formats every SEND's headers and copies its body into the write buffer instead, "
             "the least any client that sends messages it has not seen before must do.")
    L.append("- deploykit's bodies are one `Bytes` over a static buffer, borrowed as the raw socket borrows its "
             "body (cloning a refcounted `Bytes` would add two atomic operations per message that neither the "
             "raw socket nor an application sending fresh `Vec`s pays).")
    L.append("- **stomp.py**: `bench/e2e/stomppy_bench.py`, the same tests with stomp.py's `Connection`.")
    L.append("")
    L.append("CPU is the client process's user+sys as `/usr/bin/time -v` reports it (read at µs resolution from "
             "the rusage of `time`, which prints 10 ms) divided by N: it includes start-up and connecting (for "
             "stomp.py the interpreter start, ~0.3 µs/msg at this N); *loop* is the same for the timed loop "
             "alone (getrusage inside the client). Writes/msg: write(2)/writev(2) calls the client made in the "
             "timed loop per message (`/proc/self/io` syscw; the raw client counts its own). Wake-ups per "
             "1,000 msgs: the timed loop's voluntary context switches (getrusage `ru_nvcsw`, all threads), i.e. "
             "how often the client slept on the network or another thread and was woken again; where RabbitMQ "
             "sets the pace, each wake-up brings its own fixed cost (the scheduler, cold caches) whatever it carries.")
    L.append("")

    # Publish
    L.append(f"### Publish ({SIZE} B bodies to `{SINK}`, no subscriber; the last SEND has a receipt and the "
             "clock stops at its RECEIPT)")
    L.append("")
    L.append("| client | msgs/s | × raw (same mode) | CPU µs/msg | loop µs/msg | CPU × raw (target) | writes/msg | wake-ups/1,000 msgs | peak RSS MiB |")
    L.append("|---|---:|---:|---:|---:|---|---:|---:|---:|")
    rows = [
        ("pub_raw_one", None, None),
        ("pub_ours_one", "pub_raw_one", ("cpu_one", T["cpu_one"])),
        ("pub_stomppy", "pub_raw_one", None),
        ("pub_raw_batch", None, None),
        ("pub_ours_batch", "pub_raw_batch", ("cpu_batch", T["cpu_batch"])),
        ("pub_ours_batch_mt", "pub_raw_batch", ("cpu_batch", T["cpu_batch"])),
        ("pub_ours_many", "pub_raw_batch", ("cpu_batch", T["cpu_batch"])),
        ("pub_raw_build", "pub_raw_batch", None),
    ]
    for key, ref, tgt in rows:
        ratio = "—" if ref is None else f"{pratio(key, ref, 'rate'):.2f}"
        t = "—" if tgt is None else f"{pratio(key, ref, 'cpu_s'):.2f} (≤ {tgt[1]}): {yes(pratio(key, ref, 'cpu_s') <= tgt[1])}"
        L.append(f"| {by[key].label} | {fmt_rate(med(key, 'rate'))}{spread(key, 'rate')} | {ratio} | "
                 f"{cpu_us(key):.2f} | {loop_us(key):.2f} | {t} | {wpm(key)} | {wakes(key)} | {rss(key):.1f} |")
    L.append("")

    # Publish -> consume
    L.append(f"### Publish → consume ({SIZE} B, `{PC_QUEUE}`, consumer on its own connection with ack auto; "
             "from the first SEND until the consumer has all N; producer and consumer in one process)")
    L.append("")
    L.append(f"| client | msgs/s | × raw | CPU µs/msg | loop µs/msg | CPU × raw (≤ {T['cpu_pc']}) | wake-ups/1,000 msgs | peak RSS MiB |")
    L.append("|---|---:|---:|---:|---:|---|---:|---:|")
    for key in (k for k in ("pc_raw", "pc_ours", "pc_ours_mt", "pc_codec", "pc_stomppy") if k in by):
        ratio = "—" if key == "pc_raw" else f"{pratio(key, 'pc_raw', 'rate'):.2f}"
        cpu = pratio(key, 'pc_raw', 'cpu_s')
        t = {"pc_raw": "—", "pc_stomppy": "—", "pc_codec": f"{cpu:.2f} (not a client)"}.get(key) or f"{cpu:.2f} {yes(cpu <= T['cpu_pc'])}"
        L.append(f"| {by[key].label} | {fmt_rate(med(key, 'rate'))}{spread(key, 'rate')} | {ratio} | "
                 f"{cpu_us(key):.2f} | {loop_us(key):.2f} | {t} | {wakes(key)} | {rss(key):.1f} |")
    L.append("")

    # Latency
    L.append(f"### Ping-pong latency ({SIZE} B; A sends to `{PING}`, B echoes to `{PONG}`, each on its own "
             f"connection; {a.pings} round trips after {a.warmup} of warm-up; median over {a.latency_rounds} rounds)")
    L.append("")
    L.append("| client | p50 µs | p99 µs | p50 × raw (≤ 1.15) | p99 × raw (≤ 1.3) | peak RSS MiB |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for key in ("pp_raw", "pp_ours", "pp_ours_mt", "pp_stomppy"):
        p50, p99 = med(key, "p50_us"), med(key, "p99_us")
        if key == "pp_raw":
            r50 = r99 = "—"
        else:
            q50, q99 = pratio(key, "pp_raw", "p50_us"), pratio(key, "pp_raw", "p99_us")
            r50 = f"{q50:.2f}" + (f" {yes(q50 <= T['p50'])}" if key.startswith("pp_ours") else "")
            r99 = f"{q99:.2f}" + (f" {yes(q99 <= T['p99'])}" if key.startswith("pp_ours") else "")
        L.append(f"| {by[key].label} | {p50:.0f} | {p99:.0f} | {r50} | {r99} | {rss(key):.1f} |")
    e50 = pratio("emb_pp_ours", "emb_pp_raw", "p50_us")
    L.append(f"| *through dk-broker:* raw socket | {med('emb_pp_raw', 'p50_us'):.0f} | {med('emb_pp_raw', 'p99_us'):.0f} "
             f"| — | — | {rss('emb_pp_raw'):.1f} |")
    L.append(f"| *through dk-broker:* deploykit | {med('emb_pp_ours', 'p50_us'):.0f} | {med('emb_pp_ours', 'p99_us'):.0f} "
             f"| {e50:.2f} | {pratio('emb_pp_ours', 'emb_pp_raw', 'p99_us'):.2f} | {rss('emb_pp_ours'):.1f} |")
    L.append("")
    L.append(f"Through dk-broker (round trip ~{med('emb_pp_raw', 'p50_us'):.0f} µs instead of RabbitMQ's "
             f"~{med('pp_raw', 'p50_us'):.0f}) the client's own share is easier to see: "
             + (f"deploykit adds {extra:.0f} µs per round trip at p50 (four passes through a client: two sends, "
                "two deliveries)." if (extra := med('emb_pp_ours', 'p50_us') - med('emb_pp_raw', 'p50_us')) >= 1
                else "no difference at p50 in this run (the VM's wake-up latency dominates, see below)."))
    L.append("")

    # Summary
    ours_rss = max(rss(k) for k in by if k.startswith(("pub_ours", "pc_ours", "pp_ours")))
    ours_rss_key = max((k for k in by if k.startswith(("pub_ours", "pc_ours", "pp_ours"))), key=rss)
    L.append("### Targets")
    L.append("")
    L.append("| target | measured | met |")
    L.append("|---|---|---|")

    def ratio(k, ref):
        return pratio(k, ref, "rate")

    L.append(f"| publish one by one ≥ 0.95× raw | {ratio('pub_ours_one', 'pub_raw_one'):.2f}× | "
             f"{yes(ratio('pub_ours_one', 'pub_raw_one') >= T['ratio'])} |")
    L.append(f"| publish batched ≥ 0.95× raw | {ratio('pub_ours_batch', 'pub_raw_batch'):.2f}× | "
             f"{yes(ratio('pub_ours_batch', 'pub_raw_batch') >= T['ratio'])} |")
    L.append(f"| publish → consume ≥ 0.95× raw | {ratio('pc_ours', 'pc_raw'):.2f}× | "
             f"{yes(ratio('pc_ours', 'pc_raw') >= T['ratio'])} |")
    for what, key, ref, t in (("publish one by one", "pub_ours_one", "pub_raw_one", T["cpu_one"]),
                              ("publish batched", "pub_ours_batch", "pub_raw_batch", T["cpu_batch"]),
                              ("publish batched, `send_many`", "pub_ours_many", "pub_raw_batch", T["cpu_batch"]),
                              ("publish → consume", "pc_ours", "pc_raw", T["cpu_pc"])):
        q = pratio(key, ref, "cpu_s")
        L.append(f"| CPU {what} ≤ {t}× raw | {q:.2f}× ({cpu_us(key):.2f} µs/msg; raw socket: {cpu_us(ref):.2f}) | "
                 f"{yes(q <= t)} |")
    floor = pratio("pub_raw_build", "pub_raw_batch", "cpu_s")
    L.append(f"| (not a target) CPU of a raw socket that builds each frame, × the raw socket resending one prebuilt "
             f"chunk | {floor:.2f}× ({cpu_us('pub_raw_build'):.2f} µs/msg) | — |")
    q50, q99 = pratio("pp_ours", "pp_raw", "p50_us"), pratio("pp_ours", "pp_raw", "p99_us")
    L.append(f"| latency p50 ≤ 1.15× raw | {q50:.2f}× | {yes(q50 <= T['p50'])} |")
    L.append(f"| latency p99 ≤ 1.3× raw | {q99:.2f}× | {yes(q99 <= T['p99'])} |")
    L.append(f"| peak RSS ≤ 8 MiB (largest deploykit case through RabbitMQ: {by[ours_rss_key].group}, "
             f"{by[ours_rss_key].label}) | {ours_rss:.1f} MiB | {yes(ours_rss <= T['rss_mib'])} |")
    L.append(f"| (not a target) peak RSS of deploykit consuming from dk-broker | {rss('emb_ours'):.1f} MiB | "
             f"{yes(rss('emb_ours') <= T['rss_mib'])} |")
    emb = pratio("emb_ours", "pc_ours", "rate")
    L.append(f"| embedded broker publish → consume ≥ 5× RabbitMQ | {emb:.1f}× | {yes(emb >= T['embedded'])} |")
    L.append("")

    notes = HERE / "NOTES.md"
    if notes.exists():
        L.append(notes.read_text().rstrip())
        L.append("")

    # Embedded
    L.append("## Embedded broker (`dk-broker`) vs RabbitMQ")
    L.append("")
    L.append(f"Same run, same machine: publish → consume of N = {fmt_rate(N)} × {SIZE} B through `dk-broker --listen "
             "127.0.0.1:0 --max-queue-len 1000000` (release build, started once by the script) and through "
             "RabbitMQ, with our client (current-thread runtime); the raw socket through `dk-broker` for scale. "
             "On 2 CPUs the client and the broker share the machine.")
    L.append("")
    L.append("| broker | client | msgs/s | × RabbitMQ (same client) | client CPU µs/msg | client peak RSS MiB |")
    L.append("|---|---|---:|---:|---:|---:|")
    L.append(f"| RabbitMQ | deploykit | {fmt_rate(med('pc_ours', 'rate'))}{spread('pc_ours', 'rate')} | 1.00 | "
             f"{cpu_us('pc_ours'):.2f} | {rss('pc_ours'):.1f} |")
    L.append(f"| dk-broker | deploykit | {fmt_rate(med('emb_ours', 'rate'))}{spread('emb_ours', 'rate')} | "
             f"{emb:.1f} {yes(emb >= T['embedded'])} | {cpu_us('emb_ours'):.2f} | {rss('emb_ours'):.1f} |")
    L.append(f"| RabbitMQ | raw socket | {fmt_rate(med('pc_raw', 'rate'))}{spread('pc_raw', 'rate')} | 1.00 | "
             f"{cpu_us('pc_raw'):.2f} | {rss('pc_raw'):.1f} |")
    embr = pratio("emb_raw", "pc_raw", "rate")
    L.append(f"| dk-broker | raw socket | {fmt_rate(med('emb_raw', 'rate'))}{spread('emb_raw', 'rate')} | "
             f"{embr:.1f} | {cpu_us('emb_raw'):.2f} | {rss('emb_raw'):.1f} |")
    L.append("")
    L.append("Every command of the run (reproduce one case by hand with these):")
    L.append("")
    L.append("```")
    L.append("target/release/dk-broker --listen 127.0.0.1:0 --max-queue-len 1000000   # prints its PORT")
    for c in by.values():
        argv = []
        for x in c.argv:
            if x.endswith("/dk-e2e"):
                x = "bench/e2e/target/release/dk-e2e"
            elif x.endswith("/stomppy_bench.py"):
                x = "bench/e2e/stomppy_bench.py"
            elif x == sys.executable:
                x = "python3"
            elif c.group == "embedded" and re.fullmatch(r"127\.0\.0\.1:\d+", x):
                x = "127.0.0.1:PORT"
            argv.append(x)
        L.append("/usr/bin/time -v " + shlex.join(argv))
    L.append("```")
    L.append(END)
    return "\n".join(L)


def write_readme(section: str) -> None:
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        _, after = rest.split(END, 1)
        text = before + section + after
    else:
        if not text.endswith("\n"):
            text += "\n"
        text += "\n" + section + "\n"
    README.write_text(text)


if __name__ == "__main__":
    main()
