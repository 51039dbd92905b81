"""Fixtures of the peer-interop suite (stomp.py <-> our binaries, through brokers).

Environment:
  DK_BIN_DIR          where dk-broker and dk-stomp are (default: <repo>/target/debug)
  DK_TEST_RABBITMQ    stomp://guest:guest@127.0.0.1:61613  (RabbitMQ params skip without it)
  DK_TEST_ACTIVEMQ    stomp://admin:admin@127.0.0.1:61614  (ActiveMQ params skip without it)
  DK_REQUIRE_BROKERS  1: a missing real-broker variable fails instead of skipping
The embedded broker (`dk-broker --listen 127.0.0.1:0`) is always used.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from peers import TIMEOUT, Broker, Proc

REPO = Path(__file__).resolve().parents[2]
BROKERS = ["embedded", "rabbitmq", "activemq"]
REAL = {
    # name: (environment variable, STOMP `host` header stomp.py must send)
    "rabbitmq": ("DK_TEST_RABBITMQ", "/"),  # RabbitMQ wants a vhost there, not the socket address
    "activemq": ("DK_TEST_ACTIVEMQ", None),
}


def _bin(name: str) -> str:
    bin_dir = Path(os.environ.get("DK_BIN_DIR") or REPO / "target" / "debug")
    path = bin_dir / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} not found: build it first (cargo build --bins) or set DK_BIN_DIR", pytrace=False)
    return str(path)


@pytest.fixture(scope="session")
def dk_stomp() -> str:
    return _bin("dk-stomp")


@pytest.fixture(scope="session")
def embedded_broker():
    """`dk-broker --listen 127.0.0.1:0`; the port is read from its `listening on` line."""
    proc = Proc([_bin("dk-broker"), "--listen", "127.0.0.1:0"])
    try:
        pattern = re.compile(r"listening on (127\.0\.0\.1):(\d+)")
        line = proc.wait_stderr("dk-broker: `listening on 127.0.0.1:PORT` on stderr",
                                lambda l: pattern.search(l) is not None, timeout=TIMEOUT)
        host, port = pattern.search(line).groups()
        yield Broker.from_url("embedded", f"stomp://{host}:{port}")
        assert proc.p.poll() is None, f"dk-broker exited during the tests\n{proc.describe()}"
    finally:
        proc.stop()


@pytest.fixture(params=BROKERS)
def broker(request) -> Broker:
    name = request.param
    if name == "embedded":
        return request.getfixturevalue("embedded_broker")
    var, vhost = REAL[name]
    url = os.environ.get(var)
    if not url:
        if os.environ.get("DK_REQUIRE_BROKERS") == "1":
            pytest.fail(f"DK_REQUIRE_BROKERS=1 but {var} is not set (start the brokers with "
                        f"scripts/brokers.sh start, or run scripts/test)", pytrace=False)
        pytest.skip(f"{var} not set: no {name} (scripts/test sets it)")
    return Broker.from_url(name, url, vhost=vhost)
