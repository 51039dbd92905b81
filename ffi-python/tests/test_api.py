"""The Python API over core: round trips, typed publishing, errors, the GIL and signals."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import deploykit
from helpers import REPO, TIMEOUT, ZERO, unique


@pytest.fixture
def client(embedded_url):
    with deploykit.Client(embedded_url, timeout=TIMEOUT) as c:
        yield c


def test_version_comes_from_cargo():
    text = (REPO / "Cargo.toml").read_text()
    version = re.search(r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"', text, re.M | re.S).group(1)
    assert deploykit.__version__ == version
    assert (Path(deploykit.__file__).parent / "py.typed").exists()
    assert (Path(deploykit.__file__).parent / "_native.pyi").exists()


def test_send_subscribe_round_trip_text_and_headers(client):
    dest = unique("queue")
    sub = client.subscribe(dest)
    client.send(dest, "héllo", {"x-custom": "a:b", "subject": "s"}, receipt=True)
    m = sub.next_message(timeout=TIMEOUT)
    assert m is not None
    assert (m.destination, m.text, m.body) == (dest, "héllo", "héllo".encode())
    assert m.headers["x-custom"] == "a:b" and m.header("subject") == "s" and m.header("nope", "d") == "d"
    assert m.message_id and not m.is_keepalive and m.kind is None
    with pytest.raises(deploykit.MessageError, match=dest):
        m.decoded()
    assert repr(m).startswith("<deploykit.Message")


def test_binary_body_and_iteration(client):
    dest = unique("queue")
    sub = client.subscribe(dest)
    payload = bytes(range(256)) + b"\x00\x00"
    client.send(dest, payload)
    client.send(dest, b"\n")
    it = iter(sub)
    m = next(it)
    assert m.body == payload and m.text is None
    keep = next(it)
    assert keep.is_keepalive and keep.kind == "keepalive" and keep.decoded() is None


def test_send_many_in_order_with_one_receipt(client):
    dest = unique("queue")
    sub = client.subscribe(dest)
    bodies = [f"m{i}".encode() for i in range(300)] + ["tëxt", b"", bytes(range(256))]
    client.send_many(dest, (b for b in bodies), {"x-batch": "yes"}, receipt=True)
    got = [sub.next_message(timeout=TIMEOUT) for _ in bodies]
    assert [m.body for m in got] == [b.encode() if isinstance(b, str) else b for b in bodies]
    assert all(m.headers["x-batch"] == "yes" for m in got)
    client.send_many(dest, [])  # nothing to send is not an error
    with pytest.raises(TypeError, match=r"bodies\[1\]: a body must be bytes or str, not int"):
        client.send_many(dest, [b"first", 7])
    with pytest.raises(TypeError, match="not one body"):
        client.send_many(dest, b"abc")
    with pytest.raises(TypeError, match="iterable"):
        client.send_many(dest, 42)
    client.send(dest, b"after", receipt=True)
    assert sub.next_message(timeout=TIMEOUT).body == b"after", "a refused send_many sent nothing"


def test_typed_publishing_decoded(client):
    commits, builds, events = unique(), unique(), unique()
    dests = {"commits": commits, "builds": builds, "events": events}
    cs, bs, es = client.subscribe(commits), client.subscribe(builds), client.subscribe(events)
    info = [{"id": "a" * 40, "author": "A <a@x>", "timestamp": "2026-11-25T10:00:00+00:00", "message": "m"}]
    client.publish_commit("site", ZERO, "b" * 40, "refs/heads/main", commits=info, destinations=dests)
    m = cs.next_message(timeout=TIMEOUT)
    assert m.kind == "commit" and m.headers["dk-correlation-id"] == "b" * 40
    c = m.decoded()
    assert c["commits"] == info and c["source"] == "git"
    assert es.next_message(timeout=TIMEOUT).decoded()["source"] == "git-hook"

    client.publish_commit("svnrepo", "", "5", "", source="svn", svn={"revision": 5, "project": "webapp"}, destinations=dests, wire="legacy")
    m = cs.next_message(timeout=TIMEOUT)
    assert m.text.startswith("repo: svnrepo\nrevname: 5\n") and m.decoded()["svn"]["project"] == "webapp"
    assert es.next_message(timeout=TIMEOUT).text == "commit [svnrepo] 5 "

    client.publish_build("deploy-site", 42, "failure", url="http://ci/42", branch="origin/main", correlation_id="b" * 40, destinations=dests)
    b = bs.next_message(timeout=TIMEOUT)
    assert b.kind == "build"
    assert {k: b.decoded()[k] for k in ("job", "number", "status", "correlation_id")} == {"job": "deploy-site", "number": 42, "status": "failure", "correlation_id": "b" * 40}
    assert es.next_message(timeout=TIMEOUT).decoded()["source"] == "jenkins"

    client.publish_event("web01 fetched", source="fetch", destinations={"events": events})
    e = es.next_message(timeout=TIMEOUT)
    assert e.decoded() == {"kind": "event", "source": "fetch", "text": "web01 fetched"}
    # decode() without a Message: what any receiver does with headers and a body.
    assert deploykit.decode(e.destination, e.headers, e.body) == ("event", {"kind": "event", "source": "fetch", "text": "web01 fetched"})
    assert deploykit.decode("/topic/x", None, b"\n") == ("keepalive", None)


def test_argument_errors(client):
    with pytest.raises(ValueError, match="wire"):
        client.publish_event("x", wire="xml")
    with pytest.raises(ValueError, match="destinations"):
        client.publish_event("x", destinations={"nonsense": "/topic/x"})
    with pytest.raises(ValueError, match="status"):
        client.publish_build("j", 1, "great")
    with pytest.raises(ValueError, match="ack"):
        client.subscribe("/topic/x", ack="sometimes")
    with pytest.raises(TypeError, match="body"):
        client.send("/topic/x", 42)
    with pytest.raises(TypeError, match="header"):
        client.send("/topic/x", b"", {"a": 1})
    with pytest.raises(deploykit.MessageError, match="repo"):
        client.publish_commit("", ZERO, ZERO, "refs/heads/x")
    with pytest.raises(ValueError, match="source"):
        client.publish_commit("r", ZERO, ZERO, "refs/heads/x", source="cvs")


def test_refused_connection_is_a_connection_error_quickly(closed_port):
    t0 = time.monotonic()
    with pytest.raises(deploykit.ConnectionError, match=str(closed_port)) as e:
        deploykit.Client(f"stomp://127.0.0.1:{closed_port}", timeout=5, connect_attempts=3)
    assert time.monotonic() - t0 < 3
    assert isinstance(e.value, deploykit.Error)


def test_connection_error_is_the_builtin_connection_error(closed_port):
    # A real refused TCP connect: `except ConnectionError` (the built-in) catches it too.
    with pytest.raises(ConnectionError) as e:
        deploykit.Client(f"stomp://127.0.0.1:{closed_port}", timeout=5, connect_attempts=1)
    assert type(e.value) is deploykit.ConnectionError
    assert isinstance(e.value, (deploykit.Error, OSError))
    assert isinstance(e.value, deploykit.Error) and isinstance(e.value, ConnectionError)
    assert str(closed_port) in str(e.value) and e.value.args == (str(e.value),)
    assert issubclass(deploykit.RefusedError, ConnectionError) and issubclass(deploykit.ReceiptLostError, ConnectionError)
    assert deploykit.ConnectionError.__module__ == "deploykit" and deploykit.ConnectionError.__doc__


@pytest.fixture
def silent_listener():
    """A loopback TCP listener that completes the handshake (the kernel's backlog) and never says a word."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_timeout_error_is_the_builtin_timeout_error(silent_listener):
    # The TCP connect succeeds; the CONNECTED frame never comes: a real handshake timeout.
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as e:
        deploykit.Client(f"stomp://127.0.0.1:{silent_listener}", timeout=0.5, connect_attempts=1)
    assert time.monotonic() - t0 < TIMEOUT
    assert type(e.value) is deploykit.TimeoutError
    assert isinstance(e.value, deploykit.Error) and isinstance(e.value, TimeoutError) and isinstance(e.value, OSError)
    assert not isinstance(e.value, ConnectionError)
    assert "CONNECTED" in str(e.value), str(e.value)
    # and deploykit's base class catches the same error
    with pytest.raises(deploykit.Error):
        deploykit.Client(f"stomp://127.0.0.1:{silent_listener}", timeout=0.5, connect_attempts=1)


@pytest.mark.parametrize("url", ["http://example.invalid", "stomp://", "stomp://host:notaport", ""])
def test_bad_url_is_a_url_error(url):
    with pytest.raises(deploykit.UrlError) as e:
        deploykit.Client(url)
    assert isinstance(e.value, deploykit.Error)


def test_bad_login_is_refused(tmp_path):
    bin_dir = Path(os.environ.get("DK_BIN_DIR") or REPO / "target" / "debug")
    users = tmp_path / "users"
    users.write_text("hook:right\n")
    users.chmod(0o600)
    p = subprocess.Popen([str(bin_dir / "dk-broker"), "--listen", "127.0.0.1:0", "--users-file", str(users)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        port = None
        for _ in range(20):  # bounded: the line comes among the first few
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", p.stderr.readline())
            if m:
                port = m.group(1)
                break
        assert port, "dk-broker did not print its address"
        with pytest.raises(deploykit.RefusedError):
            deploykit.Client(f"stomp://127.0.0.1:{port}", login="hook", passcode="wrong", connect_attempts=1, timeout=5)
        with deploykit.Client(f"stomp://127.0.0.1:{port}", login="hook", passcode="right") as c:
            assert not c.closed
    finally:
        p.terminate()
        p.wait(TIMEOUT)


def test_closed_client_and_subscription(embedded_url):
    c = deploykit.Client(embedded_url)
    sub = c.subscribe(unique())
    assert "open" in repr(c)
    c.close()
    c.close()  # idempotent
    assert c.closed and "closed" in repr(c)
    with pytest.raises(deploykit.ClosedError):
        c.send("/topic/x", b"")
    # The subscription's client is gone: iteration ends, next_message raises.
    assert list(sub) == []
    with pytest.raises(deploykit.ClosedError):
        sub.next_message(timeout=0.1)


def test_next_message_timeout_is_bounded(client):
    sub = client.subscribe(unique())
    t0 = time.monotonic()
    assert sub.next_message(timeout=0.3) is None
    assert 0.25 <= time.monotonic() - t0 < 3


def test_iteration_releases_the_gil(client):
    dest = unique("queue")
    sub = client.subscribe(dest)
    got = []
    started = threading.Event()

    def reader():
        started.set()
        got.append(next(iter(sub)))

    t = threading.Thread(target=reader)
    t.start()
    assert started.wait(TIMEOUT)
    # While the reader blocks in Rust, this thread must keep running Python code.
    spins = 0
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        spins += 1
    assert spins > 10_000, f"only {spins} iterations: the GIL was held"
    client.send(dest, b"wake up")
    t.join(TIMEOUT)
    assert not t.is_alive() and got[0].body == b"wake up"


def test_closing_from_another_thread_ends_iteration(client):
    sub = client.subscribe(unique())
    done = threading.Event()
    result = []

    def reader():
        result.extend(sub)
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    time.sleep(0)  # let it start; the close below works whether or not it already blocks
    sub.close()
    assert done.wait(TIMEOUT) and result == []


def test_signal_handlers_run_while_iterating(client):
    sub = client.subscribe(unique())

    class Alarm(Exception):
        pass

    def on_alarm(signum, frame):
        raise Alarm()

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        t0 = time.monotonic()
        with pytest.raises(Alarm):
            for _ in sub:
                pass
        assert time.monotonic() - t0 < 3
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_ctrl_c_interrupts_a_blocked_iteration(embedded_url):
    script = (
        "import sys, deploykit\n"
        f"c = deploykit.Client({embedded_url!r})\n"
        "sub = c.subscribe('/topic/dk-pytest.ctrl-c')\n"
        "print('ready', flush=True)\n"
        "for m in sub: pass\n"
    )
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=TIMEOUT)
        assert "KeyboardInterrupt" in err, err
        assert p.returncode != 0
    finally:
        if p.poll() is None:
            p.kill()


def test_client_ack_mode(client):
    dest = unique("queue")
    sub = client.subscribe(dest, ack="client-individual")
    client.send(dest, b"one", receipt=True)
    m = sub.next_message(timeout=TIMEOUT)
    sub.ack(m)
    sub.close()
    with pytest.raises(deploykit.ClosedError):
        sub.ack(m)


def test_git_readers_refuse_bad_input(tmp_path):
    with pytest.raises(deploykit.GitError, match="invalid ref name"):
        deploykit.read_git_push(tmp_path, ZERO, "a" * 40, "refs/heads/a..b")
    with pytest.raises(deploykit.GitError, match="invalid revision"):
        deploykit.read_git_push(tmp_path, "HEAD", "a" * 40, "refs/heads/main")
    with pytest.raises(deploykit.GitError, match="cannot open"):
        deploykit.read_git_push(tmp_path, ZERO, "a" * 40, "refs/heads/main")
    assert deploykit.read_git_push(tmp_path, "a" * 40, ZERO, "refs/heads/main") == []
    with pytest.raises(deploykit.GitError, match="only deploykit"):
        deploykit.git_config(tmp_path, "core.hooksPath")
    assert deploykit.repo_name("/srv/git/site.git") == "site"
    with pytest.raises(deploykit.SvnError):
        deploykit.read_svn_commit(tmp_path, 1, "r", svnlook=tmp_path / "no-svnlook")


def test_spool_api(tmp_path, client):
    spool = deploykit.Spool(tmp_path / "spool")
    dest = unique("queue")
    sub = client.subscribe(dest)
    first = spool.push(dest, b"one", {"subject": "1"})
    bad = spool.push(dest, b"two")
    spool.push(dest, "three")
    bad.write_bytes(b"garbage")
    assert spool.pending()[0] == first
    assert spool.drain(client, timeout=TIMEOUT) == 2
    assert [sub.next_message(timeout=TIMEOUT).body for _ in range(2)] == [b"one", b"three"]
    assert spool.pending() == [] and (spool.bad_dir / bad.name).read_bytes() == b"garbage"
    commit = {"repo": "site", "oldrev": ZERO, "newrev": "c" * 40, "refname": "refs/heads/main"}
    files = spool.push_commit(commit, destinations={"commits": dest, "events": dest})
    assert len(files) == 2 and deploykit.Spool.read(files[0])[1]["dk-type"] == "commit"
    with pytest.raises(deploykit.SpoolError):
        deploykit.Spool("/proc/dk-cannot-create")
