#!/usr/bin/env python3
"""Push-to-fetched latency of dk-fetch: N daemons (each its own process and
clone of one central bare repo), through dk-broker and through RabbitMQ.

For each push: commit + `git push` in a work clone; when `git push` returns,
t0 is taken and the JSON commit message is published (what the post-receive
hook does); every daemon's FetchResult for that newrev on the results topic is
timestamped on arrival (stomp.py receiver thread). Latency = arrival - t0.
After the pushes: peak RSS (VmHWM) and RSS (VmRSS) per daemon, then CPU
(utime+stime from /proc/PID/stat) over an idle window with no pushes.
Loopback only; every process and the temp dir are cleaned up.
"""
import argparse, json, os, platform, shutil, signal, statistics, subprocess, sys, tempfile, threading, time, uuid

import stomp

HZ = os.sysconf("SC_CLK_TCK")


def git(cwd, *args):
    subprocess.run(["git", "-C", cwd, "-c", "user.name=Bench", "-c", "user.email=bench@example.org",
                    "-c", "init.defaultBranch=master", *args], check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def git_out(cwd, *args):
    return subprocess.run(["git", "-C", cwd, *args], check=True, stdout=subprocess.PIPE, text=True).stdout.strip()


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


class Results(stomp.ConnectionListener):
    def __init__(self):
        self.cv = threading.Condition()
        self.seen = {}  # (newrev or 'startup') -> {node: t}

    def on_message(self, frame):
        t = time.monotonic()
        try:
            r = json.loads(frame.body)
        except Exception:
            return
        key = "startup" if r.get("trigger") == "startup" else r.get("new_head")
        if not r.get("ok"):
            print("  fetch failed:", r.get("node"), r.get("error"), file=sys.stderr)
        with self.cv:
            self.seen.setdefault(key, {}).setdefault(r.get("node"), t)
            self.cv.notify_all()

    def wait(self, key, n, timeout):
        end = time.monotonic() + timeout
        with self.cv:
            while len(self.seen.get(key, {})) < n:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(left)
        return True


def connect(host, port, login, passcode, listener=None):
    c = stomp.Connection12([(host, port)], heartbeats=(0, 0), vhost="/")
    if listener:
        c.set_listener("l", listener)
    c.connect(login, passcode, wait=True)
    return c


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ  # utime + stime


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # MiB
    return float("nan")


def run_one(args, kind, url, host, port, login, passcode, n, clones, work, central, tmp):
    run = uuid.uuid4().hex[:8]
    topics = {k: f"/topic/dkbench.{run}.{k}" for k in ("commits", "events", "results")}
    listener = Results()
    sub = connect(host, port, login, passcode, listener)
    sub.subscribe(topics["results"], id="r", ack="auto")
    pub = connect(host, port, login, passcode)
    procs = []
    try:
        for i in range(n):
            cfg = os.path.join(tmp, f"fetch-{run}-{i}.toml")
            with open(cfg, "w") as f:
                f.write(f'node = "d{i}"\ncommits_topic = "{topics["commits"]}"\nevents_topic = "{topics["events"]}"\n'
                        f'results_topic = "{topics["results"]}"\nreconcile_interval = "off"\n'
                        f'[broker]\nurl = "{url}"\nvhost = "/"\n'
                        f'[repos.bench]\npath = "{clones[i]}"\nmode = "{args.mode}"\n'
                        + (f'target = "{clones[i]}.tree"\n' if args.mode == "trusting" else ""))
            procs.append(subprocess.Popen([args.dk_fetch, "--config", cfg], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=open(cfg + ".log", "w")))
        # Ready = subscribed: the start-up reconcile follows the subscription and publishes a result.
        if not listener.wait("startup", n, 60):
            raise SystemExit(f"{kind} n={n}: only {len(listener.seen.get('startup', {}))} daemons ready after 60 s")
        lat, worst, missing = [], [], 0
        for k in range(args.pushes):
            with open(os.path.join(work, "file.txt"), "w") as f:
                f.write(f"{run} {k}\n")
            git(work, "add", "file.txt")
            git(work, "commit", "-q", "-m", f"bench {run} {k}")
            old = git_out(central, "rev-parse", "refs/heads/master")
            git(work, "push", "-q", "origin", "HEAD:refs/heads/master")
            t0 = time.monotonic()
            new = git_out(work, "rev-parse", "HEAD")
            body = json.dumps({"repo": "bench", "oldrev": old, "newrev": new, "refname": "refs/heads/master",
                               "source": "git", "correlation_id": new})
            pub.send(topics["commits"], body, content_type="application/json",
                     headers={"dk-type": "commit", "dk-version": "1", "subject": f"[bench] refs/heads/master {new}"})
            listener.wait(new, n, args.timeout)
            with listener.cv:
                got = dict(listener.seen.get(new, {}))
            missing += n - len(got)
            ms = [(t - t0) * 1000 for t in got.values()]
            lat += ms
            if ms:
                worst.append(max(ms))
        pids = [p.pid for p in procs]
        hwm = [proc_status(p, "VmHWM") for p in pids]
        cpu0 = [proc_cpu(p) for p in pids]
        t_idle = time.monotonic()
        time.sleep(args.idle)  # the measurement window itself, not synchronisation
        dt = time.monotonic() - t_idle
        cpu1 = [proc_cpu(p) for p in pids]
        rss = [proc_status(p, "VmRSS") for p in pids]
        idle_cpu = [(b - a) / dt * 100 for a, b in zip(cpu0, cpu1)]
        alive = sum(p.poll() is None for p in procs)
        return {
            "broker": kind, "daemons": n, "pushes": args.pushes, "samples": len(lat), "missing": missing, "alive": alive,
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat) if lat else float("nan"),
            "all_p50_ms": pct(worst, 50), "all_p99_ms": pct(worst, 99),
            "hwm_mib_max": max(hwm), "hwm_mib_mean": statistics.mean(hwm),
            "rss_mib_max": max(rss), "rss_mib_mean": statistics.mean(rss),
            "idle_s": round(dt, 1), "idle_cpu_pct_mean": statistics.mean(idle_cpu), "idle_cpu_pct_max": max(idle_cpu),
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for c in (sub, pub):
            try:
                c.disconnect()
            except Exception:
                pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="directory with release dk-fetch and dk-broker")
    ap.add_argument("--counts", default="1,10,100")
    ap.add_argument("--brokers", default="embedded,rabbitmq")
    ap.add_argument("--pushes", type=int, default=50)
    ap.add_argument("--idle", type=float, default=30.0)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--mode", default="normal", choices=["normal", "trusting"])
    ap.add_argument("--rabbitmq", default="127.0.0.1:61613")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    args.dk_fetch = os.path.join(args.bin, "dk-fetch")
    counts = [int(x) for x in args.counts.split(",")]
    tmp = tempfile.mkdtemp(prefix="dk-fetch-bench-")
    broker = None
    out = []
    try:
        central = os.path.join(tmp, "central.git")
        work = os.path.join(tmp, "work")
        subprocess.run(["git", "init", "-q", "--bare", central], check=True)
        subprocess.run(["git", "clone", "-q", central, work], check=True, stderr=subprocess.DEVNULL)
        with open(os.path.join(work, "file.txt"), "w") as f:
            f.write("first\n")
        git(work, "add", "file.txt")
        git(work, "commit", "-q", "-m", "first")
        git(work, "push", "-q", "origin", "HEAD:refs/heads/master")
        clones = []
        for i in range(max(counts)):
            d = os.path.join(tmp, "servers", f"s{i}")
            subprocess.run(["git", "clone", "-q", central, d], check=True)
            clones.append(d)
        for kind in args.brokers.split(","):
            if kind == "embedded":
                broker = subprocess.Popen([os.path.join(args.bin, "dk-broker"), "--listen", "127.0.0.1:0"],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                line = broker.stderr.readline()
                if "listening on" not in line:
                    raise SystemExit(f"dk-broker: {line}")
                addr = line.split()[-1]
                threading.Thread(target=lambda s=broker.stderr: [None for _ in s], daemon=True).start()
                host, port = addr.rsplit(":", 1)
                url, login, passcode = f"stomp://{addr}", None, None
            else:
                host, port = args.rabbitmq.rsplit(":", 1)
                url, login, passcode = f"stomp://guest:guest@{args.rabbitmq}", "guest", "guest"
            for n in counts:
                r = run_one(args, kind, url, host, int(port), login, passcode, n, clones, work, central, tmp)
                print(json.dumps(r), flush=True)
                out.append(r)
            if broker:
                broker.terminate()
                broker.wait(10)
                broker = None
    finally:
        if broker:
            broker.kill()
            broker.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
