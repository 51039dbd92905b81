"""Peer interop: stomp.py (PyPI, 8.x/9.x) and our dk-stomp through each broker.

Each test runs through the embedded broker (dk-broker), RabbitMQ and ActiveMQ
(see conftest.py for how the real brokers are chosen). Every destination is
unique to its test; every wait is bounded and waits for an event.
"""
from __future__ import annotations

import pytest

from peers import DkListen, StompPy, dk_send, unique_destination

UNICODE_BODY = "héllo wörld ✓ 🚀 — こんにちは — Ωμέγα"
COLON_HEADERS = {
    "x-dk-colon": "a:b:c",  # ':' in a value (escaped as \c by STOMP 1.1/1.2 peers)
    "x-dk-url": "stomp://host:61613/path",
    "x-dk-unicode": "ünïcødé ✓",
}
# Values that need STOMP 1.1/1.2 header escaping other than ':'.
ESCAPE_HEADERS = {
    "x-dk-newline": "line one\nline two",
    "x-dk-backslash": "C:\\deploy\\path",
    "x-dk-mixed": "a:b\nc\\d",
}


@pytest.fixture
def stomppy(broker):
    peers = []

    def make():
        p = StompPy(broker)
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.close()


@pytest.fixture
def listeners():
    started = []
    yield started
    for listener in started:
        listener.stop()


def listen(dk_stomp, broker, dest, count, listeners) -> DkListen:
    listener = DkListen(dk_stomp, broker, dest, count)
    listeners.append(listener)
    return listener


def assert_headers(got: dict, want: dict):
    for name, value in want.items():
        assert got.get(name) == value, f"header {name!r}: want {value!r}, got {got.get(name)!r} (all: {got})"


# ------------------------------------------------------------------ topics

def test_stomppy_publishes_dk_stomp_receives(broker, dk_stomp, stomppy, listeners):
    dest = unique_destination("topic")
    listener = listen(dk_stomp, broker, dest, 1, listeners)  # returns once `ready`
    stomppy().send(dest, UNICODE_BODY, COLON_HEADERS)
    [msg] = listener.messages()
    assert msg["body"] == UNICODE_BODY
    assert_headers(msg["headers"], COLON_HEADERS)
    assert msg.get("destination", dest) == dest


def test_dk_stomp_publishes_stomppy_receives(broker, dk_stomp, stomppy):
    dest = unique_destination("topic")
    peer = stomppy()
    peer.subscribe(dest)  # RECEIPT awaited: the subscription is live
    dk_send(dk_stomp, broker, dest, UNICODE_BODY, COLON_HEADERS)
    [frame] = peer.wait_messages(1)
    assert frame.body == UNICODE_BODY
    assert_headers(frame.headers, COLON_HEADERS)
    assert frame.headers.get("destination") == dest


def test_dk_stomp_body_from_stdin(broker, dk_stomp, stomppy):
    dest = unique_destination("topic")
    body = "first line\nsecond line ✓\n\n{\"json\": true}\n"
    peer = stomppy()
    peer.subscribe(dest)
    dk_send(dk_stomp, broker, dest, body, stdin=True)
    [frame] = peer.wait_messages(1)
    assert frame.body == body


def test_header_escapes_stomppy_to_dk_stomp(broker, dk_stomp, stomppy, listeners):
    dest = unique_destination("topic")
    listener = listen(dk_stomp, broker, dest, 1, listeners)
    stomppy().send(dest, "escapes", ESCAPE_HEADERS)
    [msg] = listener.messages()
    assert msg["body"] == "escapes"
    assert_headers(msg["headers"], ESCAPE_HEADERS)


def test_header_escapes_dk_stomp_to_stomppy(broker, dk_stomp, stomppy):
    dest = unique_destination("topic")
    peer = stomppy()
    peer.subscribe(dest)
    dk_send(dk_stomp, broker, dest, "escapes", ESCAPE_HEADERS)
    [frame] = peer.wait_messages(1)
    assert frame.body == "escapes"
    assert_headers(frame.headers, ESCAPE_HEADERS)


def test_large_text_body_stomppy_to_dk_stomp(broker, dk_stomp, stomppy, listeners):
    dest = unique_destination("topic")
    body = ("deploykit ✓ " * 30000)[:300_000]  # ~300 KiB of UTF-8, multi-byte chars included
    listener = listen(dk_stomp, broker, dest, 1, listeners)
    stomppy().send(dest, body)
    [msg] = listener.messages()
    assert len(msg["body"]) == len(body)
    assert msg["body"] == body


# ------------------------------------------------------------------ queues

def test_queue_stomppy_to_dk_stomp_kept_until_consumed(broker, dk_stomp, stomppy, listeners):
    """Messages sent to a queue before anyone listens are kept, in order."""
    dest = unique_destination("queue")
    peer = stomppy()
    bodies = [f"job {i} ✓" for i in range(3)]
    for i, body in enumerate(bodies):
        peer.send(dest, body, {"x-dk-seq": str(i)})  # each RECEIPT awaited
    listener = listen(dk_stomp, broker, dest, 3, listeners)
    msgs = listener.messages()
    assert [m["body"] for m in msgs] == bodies
    assert [m["headers"].get("x-dk-seq") for m in msgs] == ["0", "1", "2"]


def test_queue_dk_stomp_to_stomppy_kept_until_consumed(broker, dk_stomp, stomppy):
    dest = unique_destination("queue")
    dk_send(dk_stomp, broker, dest, UNICODE_BODY, {"x-dk-colon": "q:1"})  # --receipt: the broker has it
    peer = stomppy()
    peer.subscribe(dest)
    [frame] = peer.wait_messages(1)
    assert frame.body == UNICODE_BODY
    assert frame.headers.get("x-dk-colon") == "q:1"
