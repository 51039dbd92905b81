#!/usr/bin/env python3
"""stomp.py (PyPI) doing what dk-e2e does, for bench/e2e.sh.

usage: stomppy_bench.py publish|pubsub|pingpong [--addr 127.0.0.1:61613] [--login guest]
       [--passcode guest] [--vhost /] [--n 100000] [--size 1024] [--dest D] [--reply D]
       [--rounds 2000] [--warmup 500]

Same tests and same JSON line as dk-e2e (see bench/e2e/src/main.rs): the last
SEND of `publish` carries a receipt and the clock stops at its RECEIPT; `pubsub`
runs until the consumer (own connection) has all N; `pingpong` measures round
trips through an echoing second connection. stomp.py writes every frame with its
own sendall(), so its publish is "flushed one by one". Every wait is bounded.
"""
import argparse
import json
import os
import resource
import threading
import time

import stomp

TIMEOUT = 120.0


def cpu_secs() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def waits() -> int:
    """Voluntary context switches so far: how often a thread blocked and was woken again."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw


def connect(a, listener=None):
    host, port = a.addr.rsplit(":", 1)
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("stomppy_bench: only loopback brokers are benchmarked")
    conn = stomp.Connection([(host, int(port))], heartbeats=(0, 0), vhost=a.vhost, auto_decode=False)
    if listener is not None:
        conn.set_listener("bench", listener)
    conn.connect(a.login, a.passcode, wait=True)
    return conn


class Waiter(stomp.ConnectionListener):
    """Counts MESSAGEs and notes RECEIPTs; sets `done` once `want` messages arrived."""

    def __init__(self, want=0):
        self.want = want
        self.count = 0
        self.bytes = 0
        self.done = threading.Event()
        self.receipts = {}
        self.cond = threading.Condition()
        self.t_done = None

    def on_message(self, frame):
        self.count += 1
        self.bytes += len(frame.body)
        if self.count == self.want:
            self.t_done = time.perf_counter()
            self.done.set()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts[frame.headers.get("receipt-id")] = time.perf_counter()
            self.cond.notify_all()

    def wait_receipt(self, rid):
        with self.cond:
            if not self.cond.wait_for(lambda: rid in self.receipts, timeout=TIMEOUT):
                raise SystemExit(f"stomppy_bench: no RECEIPT {rid} within {TIMEOUT}s")
            return self.receipts[rid]


def subscribe(conn, w, dest, sid):
    conn.subscribe(destination=dest, id=sid, ack="auto", headers={"receipt": f"sub-{sid}"})
    w.wait_receipt(f"sub-{sid}")


def publish(a):
    w = Waiter()
    conn = connect(a, w)
    body = b"x" * a.size
    c0, v0 = cpu_secs(), waits()
    t0 = time.perf_counter()
    for _ in range(a.n - 1):
        conn.send(destination=a.dest, body=body)
    conn.send(destination=a.dest, body=body, headers={"receipt": "last"})
    t1 = w.wait_receipt("last")
    cpu, woken = cpu_secs() - c0, waits() - v0
    conn.disconnect()
    return {"count": a.n, "secs": t1 - t0, "loop_cpu_s": cpu, "waits": woken, "rate": a.n / (t1 - t0)}


def pubsub(a):
    w = Waiter(want=a.n)
    consumer = connect(a, w)
    subscribe(consumer, w, a.dest, "c")
    producer = connect(a)
    body = b"x" * a.size
    c0, v0 = cpu_secs(), waits()
    t0 = time.perf_counter()
    for _ in range(a.n):
        producer.send(destination=a.dest, body=body)
    if not w.done.wait(TIMEOUT):
        raise SystemExit(f"stomppy_bench: consumer got {w.count} of {a.n} within {TIMEOUT}s")
    secs = w.t_done - t0
    cpu, woken = cpu_secs() - c0, waits() - v0
    if w.bytes != a.n * a.size:
        raise SystemExit("stomppy_bench: wrong body sizes received")
    producer.disconnect()
    consumer.disconnect()
    return {"count": a.n, "secs": secs, "loop_cpu_s": cpu, "waits": woken, "rate": a.n / secs}


class Echo(Waiter):
    def __init__(self, reply):
        super().__init__()
        self.conn = None
        self.reply = reply

    def on_message(self, frame):
        self.conn.send(destination=self.reply, body=frame.body)


class Pong(Waiter):
    def __init__(self):
        super().__init__()
        self.got = threading.Event()
        self.last_len = 0

    def on_message(self, frame):
        self.last_len = len(frame.body)
        self.got.set()


def pingpong(a):
    echo = Echo(a.reply)
    b = connect(a, echo)
    echo.conn = b
    subscribe(b, echo, a.dest, "b")
    pong = Pong()
    conn = connect(a, pong)
    subscribe(conn, pong, a.reply, "a")
    body = b"x" * a.size
    rtts = []
    total = a.warmup + a.rounds
    c0 = cpu_secs()
    t_start = time.perf_counter()
    for i in range(total):
        if i == a.warmup:
            c0 = cpu_secs()
            t_start = time.perf_counter()
        pong.got.clear()
        t = time.perf_counter()
        conn.send(destination=a.dest, body=body)
        if not pong.got.wait(TIMEOUT):
            raise SystemExit("stomppy_bench: no pong within the timeout")
        if i >= a.warmup:
            rtts.append((time.perf_counter() - t) * 1e6)
        if pong.last_len != a.size:
            raise SystemExit("stomppy_bench: wrong pong body")
    secs = time.perf_counter() - t_start
    cpu = cpu_secs() - c0
    conn.disconnect()
    b.disconnect()
    rtts.sort()

    def pct(p):
        return rtts[min(len(rtts) - 1, round(p / 100 * (len(rtts) - 1)))]

    return {
        "count": a.rounds, "secs": secs, "loop_cpu_s": cpu,
        "p50_us": pct(50), "p99_us": pct(99), "mean_us": sum(rtts) / len(rtts), "max_us": rtts[-1],
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("test", choices=["publish", "pubsub", "pingpong"])
    p.add_argument("--addr", default="127.0.0.1:61613")
    p.add_argument("--login", default="guest")
    p.add_argument("--passcode", default="guest")
    p.add_argument("--vhost", default="/")
    p.add_argument("--n", type=int, default=100000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--dest", default="/topic/dk-bench-sink")
    p.add_argument("--reply", default="/queue/dk-bench-pong")
    p.add_argument("--rounds", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=500)
    a = p.parse_args()
    watchdog = threading.Timer(TIMEOUT + 30, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    out = {"publish": publish, "pubsub": pubsub, "pingpong": pingpong}[a.test](a)
    res = {"test": a.test, "client": "stomp.py", "mode": "one" if a.test == "publish" else "-", "rt": "-",
           "size": a.size, "writes": None}
    res.update(out)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
