"""The git post-receive hook end to end: a real bare repository with
examples/hooks/post-receive installed, real `git push`es into it, and the
commit messages read back from the broker (subscribed before each push)."""
from __future__ import annotations

import sys
import time

import pytest

import deploykit
from helpers import TIMEOUT, ZERO, GitRig, Receiver, run


@pytest.fixture
def rig(tmp_path, broker_url):
    return GitRig(tmp_path, broker_url)


@pytest.fixture
def receiver(rig, broker_url):
    r = Receiver(broker_url, rig.commits_dest, rig.events_dest)
    yield r
    r.close()


def commit_of(msg: deploykit.Message) -> dict:
    assert msg.kind == "commit", msg.headers
    c = msg.decoded()
    assert c is not None
    return c


def test_branch_push_new_then_update(rig, receiver):
    first = rig.commit("First commit\n\nWith a body ✓", date="2026-11-25T10:00:00+01:00")
    second = rig.commit("Second commit", date="2026-11-25T11:30:00-05:00")
    push = rig.push("main")
    assert push.returncode == 0
    assert "deploykit:" not in push.stderr, push.stderr

    (msg,) = receiver.take(1)
    assert msg.headers["dk-type"] == "commit" and msg.headers["dk-version"] == "1"
    assert msg.headers["dk-correlation-id"] == second
    assert msg.headers["subject"] == f"[site] refs/heads/main {second}"
    c = commit_of(msg)
    assert (c["repo"], c["oldrev"], c["newrev"], c["refname"], c["source"]) == ("site", ZERO, second, "refs/heads/main", "git")
    assert c["correlation_id"] == second
    assert [x["id"] for x in c["commits"]] == [second, first], "newest first"
    assert c["commits"][0] == {
        "id": second,
        "author": "Dev One <dev@example.com>",
        "timestamp": "2026-11-25T11:30:00-05:00",
        "message": "Second commit\n",
    }
    assert c["commits"][1]["message"] == "First commit\n\nWith a body ✓\n"
    assert c["commits"][1]["timestamp"] == "2026-11-25T10:00:00+01:00"
    (event,) = receiver.take(1, "events")
    assert event.decoded()["text"] == f"commit [site] refs/heads/main {second}"
    assert event.decoded()["source"] == "git-hook"

    third = rig.commit("Third commit")
    rig.push("main")
    c = commit_of(receiver.take(1)[0])
    assert (c["oldrev"], c["newrev"]) == (second, third)
    assert [x["id"] for x in c["commits"]] == [third]
    assert not rig.spool.exists() or not list(rig.spool.glob("*.msg")), "the spool is empty after a delivered push"


def test_tag_push_annotated_and_lightweight(rig, receiver):
    head = rig.commit("Release me")
    rig.push("main")
    receiver.take(1)
    rig.git("tag", "-a", "v1.0", "-m", "Release 1.0")
    rig.git("tag", "v1.0-light")
    tag_obj = rig.git("rev-parse", "v1.0").stdout.strip()
    assert tag_obj != head
    rig.push("v1.0")
    c = commit_of(receiver.take(1)[0])
    assert (c["refname"], c["oldrev"], c["newrev"]) == ("refs/tags/v1.0", ZERO, tag_obj)
    assert [x["id"] for x in c["commits"]] == [head], "the tagged commit"
    rig.push("v1.0-light")
    c = commit_of(receiver.take(1)[0])
    assert (c["refname"], c["newrev"]) == ("refs/tags/v1.0-light", head)
    assert [x["id"] for x in c["commits"]] == [head]


def test_branch_deletion_has_a_zero_newrev(rig, receiver):
    rig.commit("Base")
    rig.push("main")
    receiver.take(1)
    rig.git("checkout", "--quiet", "-b", "feature")
    feature = rig.commit("Feature work")
    rig.push("feature")
    c = commit_of(receiver.take(1)[0])
    assert c["refname"] == "refs/heads/feature"
    assert [x["id"] for x in c["commits"]] == [feature], "only what no other branch has"
    rig.push(":refs/heads/feature")
    msg = receiver.take(1)[0]
    c = commit_of(msg)
    assert (c["refname"], c["oldrev"], c["newrev"]) == ("refs/heads/feature", feature, ZERO)
    assert c.get("commits", []) == []
    assert msg.headers["subject"] == f"[site] refs/heads/feature {ZERO}"


def test_push_of_three_refs_gives_three_messages(rig, receiver):
    main = rig.commit("On main")
    rig.git("branch", "one")
    rig.git("checkout", "--quiet", "-b", "two")
    two = rig.commit("On two")
    rig.push("main", "one", "two")
    msgs = receiver.take(3)
    by_ref = {commit_of(m)["refname"]: commit_of(m) for m in msgs}
    assert set(by_ref) == {"refs/heads/main", "refs/heads/one", "refs/heads/two"}
    assert by_ref["refs/heads/main"]["newrev"] == main
    assert by_ref["refs/heads/one"]["newrev"] == main
    assert by_ref["refs/heads/two"]["newrev"] == two
    assert {m.headers["dk-correlation-id"] for m in msgs} == {main, two}
    receiver.take(3, "events")
    receiver.assert_quiet()


def test_legacy_wire_read_back_by_core_and_stomp_py(tmp_path, embedded_url):
    import stomp

    rig = GitRig(tmp_path, embedded_url, wire="legacy")
    receiver = Receiver(embedded_url, rig.commits_dest, rig.events_dest)
    host, port = embedded_url.rsplit("/", 1)[1].rsplit(":", 1)
    import threading

    got: list = []
    arrived = threading.Event()
    subscribed = threading.Event()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame):
            got.append(frame)
            arrived.set()

        def on_receipt(self, frame):
            subscribed.set()

    conn = stomp.Connection12([(host, int(port))])
    conn.set_listener("", Listener())
    conn.connect(wait=True)
    # The broker handles frames in order: once the receipt is back, the subscription is live.
    conn.subscribe(rig.commits_dest, id="legacy", ack="auto", headers={"receipt": "sub-1"})
    try:
        assert subscribed.wait(TIMEOUT), "stomp.py SUBSCRIBE not confirmed"
        head = rig.commit("Legacy please")
        rig.push("main")
        msg = receiver.take(1)[0]
        assert "dk-type" not in msg.headers
        assert msg.text.startswith(f"repo: site\noldrev: {ZERO}\nnewrev: {head}\nrefname: refs/heads/main\n")
        assert f" commit {head}\nAuthor: Dev One <dev@example.com>\n" in msg.text
        c = commit_of(msg)
        assert (c["repo"], c["refname"], c["newrev"]) == ("site", "refs/heads/main", head)
        assert c["correlation_id"] == head
        # The event line in legacy form: plain text, eventbot subject.
        ev = receiver.take(1, "events")[0]
        assert ev.headers["subject"] == "Talking to eventbot"
        assert ev.text == f"commit [site] refs/heads/main {head}"

        assert arrived.wait(TIMEOUT), "stomp.py did not receive the legacy commit"
        body = got[0].body if isinstance(got[0].body, str) else got[0].body.decode()
        fields = dict(line.split(":", 1) for line in body.splitlines()[:4])
        assert {k: v.strip() for k, v in fields.items()} == {"repo": "site", "oldrev": ZERO, "newrev": head, "refname": "refs/heads/main"}
    finally:
        conn.disconnect()
        receiver.close()


def test_broker_down_spools_then_next_push_delivers_in_order(tmp_path, embedded_url, closed_port):
    rig = GitRig(tmp_path, embedded_url)
    receiver = Receiver(embedded_url, rig.commits_dest, rig.events_dest)
    try:
        down = f"stomp://127.0.0.1:{closed_port}"
        first = rig.commit("Pushed while the broker is down")
        t0 = time.monotonic()
        push = run(["git", "push", "origin", "main"], cwd=rig.work, env=dict(rig.env, DK_BROKER_URL=down))
        elapsed = time.monotonic() - t0
        assert push.returncode == 0, push.stderr
        assert elapsed < 10, f"the hook must not hold the push ({elapsed:.1f}s)"
        assert "deploykit: could not publish to the broker" in push.stderr, push.stderr
        assert "ConnectionError" in push.stderr and str(closed_port) in push.stderr, push.stderr
        assert "2 message(s) kept in" in push.stderr, push.stderr
        spooled = sorted(rig.spool.glob("*.msg"))
        assert len(spooled) == 2, "the commit and its event line"
        dest, headers, body = deploykit.Spool.read(spooled[0])
        assert dest == rig.commits_dest and headers["dk-correlation-id"] == first
        assert (rig.spool.stat().st_mode & 0o777) == 0o700
        receiver.assert_quiet()

        # The broker is reachable again: the next push sends the spooled message first.
        second = rig.commit("Pushed with the broker up")
        push = rig.push("main")
        assert "also sent 2 message(s) spooled by an earlier run" in push.stderr, push.stderr
        a, b = receiver.take(2)
        assert (commit_of(a)["newrev"], commit_of(b)["newrev"]) == (first, second)
        assert commit_of(b)["oldrev"] == first
        assert [e.decoded()["correlation_id"] for e in receiver.take(2, "events")] == [first, second]
        assert not list(rig.spool.glob("*.msg"))
    finally:
        receiver.close()


def test_fail_on_error_and_bounded_time(tmp_path, embedded_url, closed_port):
    """Direct run of the hook: exit 1 with fail_on_error, 0 without, both quickly."""
    rig = GitRig(tmp_path, embedded_url)
    head = rig.commit("x")
    rig.push("main")  # through the hook, broker up
    env = dict(rig.env, GIT_DIR=str(rig.bare), DK_BROKER_URL=f"stomp://127.0.0.1:{closed_port}")
    line = f"{ZERO} {head} refs/heads/again\n"
    argv = [sys.executable, "-m", "deploykit.hooks", "git-post-receive"]
    p = run(argv, env=env, stdin=line, check=False)
    assert p.returncode == 0 and "could not publish" in p.stderr, p.stderr
    p = run(argv, env=dict(env, DK_FAIL_ON_ERROR="true"), stdin=line, check=False)
    assert p.returncode == 1 and "could not publish" in p.stderr, p.stderr
    # A malformed line and an invalid ref name are reported, never executed or published.
    p = run(argv, env=env, stdin=f"garbage\n{ZERO} {head} refs/heads/bad..name\n", check=False)
    assert p.returncode == 0
    assert "malformed post-receive line 1" in p.stderr and "skipping refs/heads/bad..name" in p.stderr, p.stderr
    # A broker address that swallows packets (no answer at all) is bounded by the timeout.
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts TCP but never speaks STOMP
    try:
        t0 = time.monotonic()
        p = run(argv, env=dict(env, DK_BROKER_URL=f"stomp://127.0.0.1:{silent.getsockname()[1]}", DK_HOOK_TIMEOUT="1.5"), stdin=line, check=False)
        assert p.returncode == 0 and "could not publish" in p.stderr, p.stderr
        assert time.monotonic() - t0 < 8, "bounded by DK_HOOK_TIMEOUT"
    finally:
        silent.close()
    # Everything that failed is spooled, nothing lost.
    assert len(list(rig.spool.glob("*.msg"))) == 6


def test_configuration_sources_and_precedence(tmp_path, embedded_url):
    from deploykit import hooks

    rig = GitRig(tmp_path, embedded_url)
    rig.config_file.write_text(
        'broker_url = "stomp://from-file:1"\nwire = "legacy"\nmax_commits = 7\nbogus = 1\n'
        '[git]\nevent_source = "gitolite"\ntimeout = 2.5\n[svn]\nevent_source = "svnserver"\n'
    )
    run(["git", "--git-dir", str(rig.bare), "config", "deploykit.maxCommits", "9"], env=rig.env)
    run(["git", "--git-dir", str(rig.bare), "config", "deploykit.failOnError", "yes"], env=rig.env)
    env = dict(rig.env, DK_WIRE="json", DK_MAX_COMMITS="nope")
    cfg = hooks.load_config("git", rig.bare, env)
    assert cfg.broker_url == "stomp://from-file:1"
    assert cfg.event_source == "gitolite" and cfg.timeout == 2.5
    assert cfg.wire == "json", "environment beats the file"
    assert cfg.max_commits == 9, "git config beats the file; an invalid env value is ignored"
    assert cfg.fail_on_error is True
    assert cfg.commits_destination == rig.commits_dest
    assert any("bogus" in w for w in cfg.warnings) and any("DK_MAX_COMMITS" in w for w in cfg.warnings)
    assert hooks.load_config("svn", None, env).event_source == "svnserver"
    assert hooks.load_config("git", None, {"DK_HOOKS_CONFIG": str(tmp_path / "missing.toml")}).warnings
