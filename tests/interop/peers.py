"""Helpers for the peer-interop suite: our binaries and stomp.py as peers.

Every wait here is bounded (TIMEOUT seconds unless told otherwise) and waits for
an event (a line on a pipe, a RECEIPT, a MESSAGE), never for a fixed time.
Commands are run with argument vectors; nothing goes through a shell.
"""
from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Optional
from urllib.parse import unquote, urlsplit

import stomp

TIMEOUT = 10.0
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Child processes get no colours and quiet logs, so their lines are parseable.
CHILD_ENV = dict(os.environ, NO_COLOR="1", RUST_LOG_STYLE="never")


def unique_destination(kind: str = "topic") -> str:
    return f"/{kind}/dk.interop.{uuid.uuid4().hex}"


@dataclass
class Broker:
    """One broker the tests run through."""

    name: str  # embedded | rabbitmq | activemq
    url: str  # stomp://[user:pass@]host:port, as given to our binaries
    host: str
    port: int
    login: Optional[str]
    passcode: Optional[str]
    vhost: Optional[str]  # STOMP `host` header for stomp.py (RabbitMQ needs "/")

    @classmethod
    def from_url(cls, name: str, url: str, vhost: Optional[str] = None) -> "Broker":
        parts = urlsplit(url)
        if parts.scheme != "stomp" or not parts.hostname or not parts.port:
            raise ValueError(f"{name}: expected stomp://[user:pass@]host:port, got {url!r}")
        return cls(
            name=name,
            url=url,
            host=parts.hostname,
            port=parts.port,
            login=unquote(parts.username) if parts.username is not None else None,
            passcode=unquote(parts.password) if parts.password is not None else None,
            vhost=vhost,
        )


class Proc:
    """A child process whose stdout and stderr lines are collected by threads."""

    def __init__(self, argv: list[str], stdin: Optional[bytes] = None):
        self.argv = argv
        self.p = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=CHILD_ENV,
        )
        self.stdout_lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.stderr_lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.stderr_all: list[str] = []
        self.stdout_all: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.p.stdout, self.stdout_lines, self.stdout_all), daemon=True),
            threading.Thread(target=self._pump, args=(self.p.stderr, self.stderr_lines, self.stderr_all), daemon=True),
        ]
        for t in self._threads:
            t.start()
        if stdin is not None:
            assert self.p.stdin is not None
            self.p.stdin.write(stdin)
            self.p.stdin.close()

    @staticmethod
    def _pump(pipe, q, keep):
        for raw in iter(pipe.readline, b""):
            line = ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\r\n")
            keep.append(line)
            q.put(line)
        q.put(None)  # EOF

    def _wait_line(self, q, what: str, pred: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{what}: not seen within {timeout}s\n{self.describe()}")
            try:
                line = q.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.p.wait(timeout=TIMEOUT)
                raise AssertionError(f"{what}: the stream ended first (exit {self.p.returncode})\n{self.describe()}")
            if pred(line):
                return line

    def wait_stderr(self, what: str, pred: Callable[[str], bool], timeout: float = TIMEOUT) -> str:
        return self._wait_line(self.stderr_lines, what, pred, timeout)

    def stdout_line(self, what: str, timeout: float = TIMEOUT) -> str:
        return self._wait_line(self.stdout_lines, what, lambda line: line.strip() != "", timeout)

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit within {timeout}s\n{self.describe()}") from None

    def describe(self) -> str:
        for t in self._threads:
            t.join(timeout=0.5)
        tail = lambda lines: "\n    ".join(lines[-30:]) or "(nothing)"  # noqa: E731
        return (f"  command: {self.argv}\n  exit: {self.p.poll()}\n"
                f"  stdout:\n    {tail(self.stdout_all)}\n  stderr:\n    {tail(self.stderr_all)}")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        for t in self._threads:
            t.join(timeout=2)


# ---------------------------------------------------------------- our binaries

def dk_send(dk_stomp: str, broker: Broker, dest: str, body: str, headers: dict[str, str] | None = None,
            stdin: bool = False) -> None:
    """`dk-stomp send --receipt`: returns once the broker has the message."""
    argv = [dk_stomp, "send", "--broker", broker.url, "--receipt"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}:{value}"]
    argv += [dest, "-" if stdin else body]
    try:
        r = subprocess.run(argv, input=body.encode("utf-8") if stdin else None,
                           stdin=None if stdin else subprocess.DEVNULL,
                           capture_output=True, timeout=TIMEOUT, env=CHILD_ENV)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"dk-stomp send did not finish within {TIMEOUT}s: {argv}\n"
                             f"stderr: {e.stderr!r}") from None
    assert r.returncode == 0, (f"dk-stomp send exited {r.returncode}: {argv}\n"
                               f"stdout: {r.stdout.decode(errors='replace')}\n"
                               f"stderr: {r.stderr.decode(errors='replace')}")


class DkListen:
    """`dk-stomp listen --json --count N`, started and waited for `ready`."""

    def __init__(self, dk_stomp: str, broker: Broker, dest: str, count: int):
        self.count = count
        self.proc = Proc([dk_stomp, "listen", "--broker", broker.url, dest,
                          "--count", str(count), "--json", "--wait", str(TIMEOUT * 2)])
        try:
            # `ready` alone on a line of stderr: the subscription is confirmed by a RECEIPT.
            self.proc.wait_stderr("dk-stomp listen: `ready` on stderr", lambda line: line.strip() == "ready")
        except BaseException:
            self.proc.stop()
            raise

    def messages(self) -> list[dict]:
        out = []
        for i in range(self.count):
            line = self.proc.stdout_line(f"dk-stomp listen: message {i + 1} of {self.count}")
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise AssertionError(f"dk-stomp listen --json printed a line that is not JSON: {line!r} ({e})")
        rc = self.proc.wait_exit()
        assert rc == 0, f"dk-stomp listen exited {rc} after {self.count} messages\n{self.proc.describe()}"
        return out

    def stop(self):
        self.proc.stop()


# ---------------------------------------------------------------- stomp.py

@dataclass
class _Collector(stomp.ConnectionListener):
    connected: threading.Event = field(default_factory=threading.Event)
    error: Optional[str] = None
    errored: threading.Event = field(default_factory=threading.Event)
    receipts: set = field(default_factory=set)
    messages: list = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    disconnected: threading.Event = field(default_factory=threading.Event)

    def on_connected(self, frame):
        self.connected.set()

    def on_error(self, frame):
        self.error = f"ERROR frame: headers={frame.headers} body={frame.body!r}"
        self.errored.set()
        with self.cond:
            self.cond.notify_all()

    def on_receipt(self, frame):
        with self.cond:
            self.receipts.add(frame.headers.get("receipt-id"))
            self.cond.notify_all()

    def on_message(self, frame):
        with self.cond:
            self.messages.append(frame)
            self.cond.notify_all()

    def on_disconnected(self):
        self.disconnected.set()
        with self.cond:
            self.cond.notify_all()


class StompPy:
    """A stomp.py 8.x/9.x connection with receipts awaited and bounded waits."""

    def __init__(self, broker: Broker):
        self.broker = broker
        self.listener = _Collector()
        self.conn = stomp.Connection([(broker.host, broker.port)], heartbeats=(0, 0),
                                     vhost=broker.vhost, timeout=TIMEOUT, auto_content_length=True)
        self.conn.set_listener("collector", self.listener)
        # connect(wait=True) would wait forever for CONNECTED: wait on our event instead.
        self.conn.connect(username=broker.login, passcode=broker.passcode, wait=False)
        deadline = time.monotonic() + TIMEOUT
        while not self.listener.connected.wait(0.05):
            if self.listener.errored.is_set() or time.monotonic() > deadline:
                self.close()
                raise AssertionError(f"stomp.py could not connect to {broker.name} "
                                     f"({broker.host}:{broker.port}): {self.listener.error or 'timeout'}")

    def _await(self, what: str, pred: Callable[[], bool], timeout: float = TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.listener.cond:
            while not pred():
                if self.listener.error:
                    raise AssertionError(f"stomp.py: {what}: {self.listener.error}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"stomp.py: {what}: not within {timeout}s")
                self.listener.cond.wait(remaining)

    def _receipt(self) -> str:
        return f"r-{uuid.uuid4().hex}"

    def subscribe(self, dest: str) -> None:
        """SUBSCRIBE and wait for its RECEIPT, so the subscription is live."""
        rid = self._receipt()
        self.conn.subscribe(dest, id=uuid.uuid4().hex, ack="auto", headers={"receipt": rid})
        self._await(f"RECEIPT for SUBSCRIBE {dest}", lambda: rid in self.listener.receipts)

    def send(self, dest: str, body: str, headers: dict[str, str] | None = None) -> None:
        """SEND and wait for its RECEIPT."""
        rid = self._receipt()
        h = dict(headers or {})
        h["receipt"] = rid
        self.conn.send(dest, body, headers=h)
        self._await(f"RECEIPT for SEND {dest}", lambda: rid in self.listener.receipts)

    def wait_messages(self, n: int, timeout: float = TIMEOUT) -> list:
        self._await(f"{n} message(s)", lambda: len(self.listener.messages) >= n, timeout)
        return list(self.listener.messages[:n])

    def close(self) -> None:
        # DISCONNECT with a receipt, bounded; then make sure the socket is gone.
        try:
            if self.conn.is_connected():
                self.conn.disconnect()
                self.listener.disconnected.wait(2)
        except Exception:  # noqa: BLE001 -- best effort on teardown
            pass
        try:
            self.conn.transport.disconnect_socket()
        except Exception:  # noqa: BLE001
            pass
