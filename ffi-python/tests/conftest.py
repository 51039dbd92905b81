"""Fixtures of the Python binding and hooks suite.

Environment (scripts/python-suite.sh sets the first):
  DK_TEST_EMBEDDED    stomp://127.0.0.1:PORT of a running dk-broker; without it the
                      suite starts `DK_BIN_DIR/dk-broker --listen 127.0.0.1:0` itself
  DK_BIN_DIR          where dk-broker is (default: <repo>/target/debug)
  DK_TEST_RABBITMQ    stomp://guest:guest@127.0.0.1:61613 (RabbitMQ params skip without it)
  DK_REQUIRE_BROKERS  1: a missing RabbitMQ URL fails instead of skipping
Every wait is bounded and waits for an event, never for a fixed time.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import TIMEOUT  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def embedded_url() -> str:
    url = os.environ.get("DK_TEST_EMBEDDED")
    if url:
        yield url
        return
    bin_dir = Path(os.environ.get("DK_BIN_DIR") or REPO / "target" / "debug")
    broker = bin_dir / "dk-broker"
    if not os.access(broker, os.X_OK):
        pytest.fail(f"{broker} not found: run scripts/python-suite.sh, or cargo build --bin dk-broker", pytrace=False)
    p = subprocess.Popen([str(broker), "--listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        for line in p.stderr:
            m = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
            if m and not found:
                found.append(m.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        if not ready.wait(TIMEOUT) or not found:
            pytest.fail("dk-broker did not print its `listening on` line", pytrace=False)
        yield f"stomp://{found[0]}"
    finally:
        p.terminate()
        try:
            p.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture(params=["embedded", "rabbitmq"])
def broker_url(request) -> str:
    """The broker each hook test runs through: always the embedded one, RabbitMQ when configured."""
    if request.param == "embedded":
        return request.getfixturevalue("embedded_url")
    url = os.environ.get("DK_TEST_RABBITMQ")
    if not url:
        if os.environ.get("DK_REQUIRE_BROKERS") == "1":
            pytest.fail("DK_REQUIRE_BROKERS=1 but DK_TEST_RABBITMQ is not set", pytrace=False)
        pytest.skip("DK_TEST_RABBITMQ not set: no RabbitMQ (scripts/test sets it)")
    return url


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def deadline():
    """`deadline(seconds)` -> a function telling the seconds left (for bounded loops)."""

    def make(seconds: float = TIMEOUT):
        end = time.monotonic() + seconds
        return lambda: end - time.monotonic()

    return make
