#!/usr/bin/env python3
"""Writes the committed seed corpus: fuzz/corpus/TARGET/NAME, a few dozen per target.

    python3 fuzz/make_seeds.py      # rewrites fuzz/corpus/ (deterministic)

Seeds are small valid (and a few nearly valid) inputs in each target's input
layout (see the doc comment of fuzz/fuzz_targets/TARGET.rs); fields are
separated by 0x1f. What the fuzzer finds goes to fuzz/corpus-gen/ (gitignored).
"""

import json
import os
import shutil

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
SEP = b"\x1f"
REV_A = "a" * 40
REV_B = "b" * 40
UUID = "6f1c2a9e-3b7d-4c55-9a8e-1d2f3a4b5c6d"


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def frame(command, headers=(), body=b"", content_length=True):
    out = command.encode() + b"\n"
    for k, v in headers:
        out += f"{k}:{v}\n".encode()
    if content_length and body:
        out += f"content-length:{len(body)}\n".encode()
    return out + b"\n" + body + b"\x00"


CONNECT12 = frame("CONNECT", [("accept-version", "1.0,1.1,1.2"), ("host", "/"), ("login", "guest"), ("passcode", "guest")])
CONNECT10 = frame("CONNECT", [("login", "guest"), ("passcode", "guest")])
STOMP11 = frame("STOMP", [("accept-version", "1.1"), ("host", "/"), ("heart-beat", "1000,1000")])


def stomp_frames():
    return {
        "connect12": CONNECT12,
        "connect10": CONNECT10,
        "stomp11": STOMP11,
        "send": frame("SEND", [("destination", "/topic/deploykit.git.commits"), ("receipt", "r1")], b"hello"),
        "send-nul-body": frame("SEND", [("destination", "/queue/q")], b"a\x00b"),
        "send-no-length": frame("SEND", [("destination", "/queue/q")], b"plain", content_length=False),
        "message-escapes": frame("MESSAGE", [("destination", "/topic/a\\cb"), ("subscription", "0"), ("message-id", "m\\n1"), ("x", "a\\\\b\\r")], b"{}"),
        "subscribe": frame("SUBSCRIBE", [("destination", "/queue/q"), ("id", "0"), ("ack", "client-individual")]),
        "error": frame("ERROR", [("message", "bad")], b"details"),
        "heartbeats": b"\n\r\n\n" + frame("RECEIPT", [("receipt-id", "r1")]) + b"\r\n\n",
        "two-frames": frame("ACK", [("id", "1")]) + frame("NACK", [("id", "2"), ("transaction", "t")]),
        "dup-headers": frame("SEND", [("destination", "/q/a"), ("destination", "/q/b"), ("content-type", "text/plain")], b"x"),
        "bad-length": b"SEND\ndestination:/q\ncontent-length:99999999999999999999\n\nx\x00",
        "length-no-nul": b"SEND\ncontent-length:2\n\nabc\x00",
        "bad-escape": b"SEND\ndestination:a\\tb\n\n\x00",
        "no-colon": b"SEND\nnot a header\n\n\x00",
        "unknown-command": b"HELLO\n\n\x00",
        "crlf-1.2": b"SEND\r\ndestination:/q\r\n\r\nbody\x00",
        "many-headers": b"SEND\n" + b"".join(f"h{i}:{i}\n".encode() for i in range(40)) + b"\n\x00",
        "not-utf8": b"SEND\ndestination:\xff\xfe\n\n\x00",
    }


def stomp_decoder():
    for i, (name, data) in enumerate(stomp_frames().items()):
        flags = i % 3 | (0x80 if i % 4 == 3 else 0)
        write("stomp_decoder", name, bytes([flags, (i * 37) & 0xFF]) + data)


def broker_session():
    t = "broker_session"
    sub = frame("SUBSCRIBE", [("destination", "/queue/q"), ("id", "s1"), ("ack", "client"), ("receipt", "r-sub")])
    send = frame("SEND", [("destination", "/queue/q"), ("receipt", "r-send")], b"payload")
    seeds = {
        "connect-only": (0, CONNECT12),
        "connect-10-disconnect": (0, CONNECT10 + frame("DISCONNECT", [("receipt", "bye")])),
        "stomp-heartbeat": (4, STOMP11 + b"\n\n"),
        "login-required-ok": (1, CONNECT12 + frame("DISCONNECT")),
        "login-required-bad": (1, frame("CONNECT", [("accept-version", "1.2"), ("login", "guest"), ("passcode", "nope")])),
        "sub-send-ack": (0, CONNECT12 + sub + send + frame("ACK", [("id", "dk-1-1")]) + frame("UNSUBSCRIBE", [("id", "s1")])),
        "sub-send-nack": (0, CONNECT12 + sub + send + frame("NACK", [("id", "dk-1-1")])),
        "transaction": (0, CONNECT12 + frame("BEGIN", [("transaction", "t1")]) + frame("SEND", [("destination", "/topic/t"), ("transaction", "t1")], b"x") + frame("COMMIT", [("transaction", "t1"), ("receipt", "c")])),
        "abort": (0, CONNECT12 + frame("BEGIN", [("transaction", "t1")]) + frame("ABORT", [("transaction", "t1")])),
        "unknown-tx": (0, CONNECT12 + frame("COMMIT", [("transaction", "nope")])),
        "temp-queue": (0, CONNECT12 + frame("SEND", [("destination", "/queue/svc"), ("reply-to", "/temp-queue/r")], b"ask") + frame("SUBSCRIBE", [("destination", "/queue/svc"), ("id", "1")])),
        "reply-queue": (0, CONNECT12 + frame("SEND", [("destination", "/reply-queue/dk-1.r")], b"answer")),
        "prefetch": (2, CONNECT12 + frame("SUBSCRIBE", [("destination", "/queue/q"), ("id", "1"), ("ack", "client-individual"), ("prefetch-count", "1")]) + send * 12),
        "dup-sub": (0, CONNECT12 + sub + sub),
        "no-destination": (0, CONNECT12 + frame("SEND", [("receipt", "x")], b"y")),
        "frame-before-connect": (0, frame("SEND", [("destination", "/q")], b"z")),
        "garbage": (0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        "big-frame-small-limits": (2, CONNECT12 + frame("SEND", [("destination", "/topic/t")], b"x" * 5000)),
        "topic-fanout": (2, CONNECT12 + b"".join(frame("SUBSCRIBE", [("destination", "/topic/t"), ("id", str(i))]) for i in range(6)) + frame("SEND", [("destination", "/topic/t")], b"f" * 2000) * 4),
        "version-10-ack": (0, CONNECT10 + frame("SUBSCRIBE", [("destination", "/queue/q"), ("id", "1"), ("ack", "client")]) + send + frame("ACK", [("message-id", "dk-1-1")])),
    }
    for name, (flags, data) in seeds.items():
        write(t, name, bytes([flags]) + data)


def broker_url():
    for i, url in enumerate(
        [
            "stomp://127.0.0.1:61613",
            "stomp://guest:guest@localhost",
            "stomp+ssl://user:p%40ss@broker.example:61614",
            "stomp://[::1]:61613",
            "failover:(stomp://a:1,stomp://b:2)",
            "failover://(stomp://u:secretpassword@a:61613,stomp+ssl://b:61614)?initialReconnectDelay=10&maxReconnectDelay=30000&useExponentialBackOff=true&backOffMultiplier=2.0&maxReconnectAttempts=5&startupMaxReconnectAttempts=1&randomize=false",
            "failover:(stomp://a)?randomize=true&reconnectDelayJitter=0.5",
            "stomp://:@host:0",
            "stomp://host:99999",
            "failover:()",
            "failover:(stomp://a,",
            "http://example.com",
            "stomp://user@host",
            "stomp://h?x=y",
            "stomp://guest://hosguest@localhost",
            "stomp://12:7.su2t:guestUUomp://a:1,stomp://bUUUUUUUUUUUUU@localhost:61",
        ]
    ):
        write("broker_url", f"url{i:02}", url)


def legacy_commit():
    return f"repo: site\noldrev: {REV_A}\nnewrev: {REV_B}\nrefname: refs/heads/master\n commit {REV_B}\nAuthor: A U Thor <a@example.com>\nDate: 2024-01-02T03:04:05+00:00\n\tFix it\n\n"


def message_decode():
    t = "message_decode"
    commit = {"repo": "site", "oldrev": REV_A, "newrev": REV_B, "refname": "refs/heads/master", "source": "git", "commits": [{"id": REV_B, "author": "A <a@x>", "timestamp": "2024-01-02T03:04:05+00:00", "message": "m"}]}
    req = {"request_id": UUID, "action": "deploy", "site": "www", "tag": "v1.2", "user": "alice", "filters": {"identity": ["/^web/"], "class": ["web"], "fact": {"env": "prod"}}, "issued_at": 1700000000, "expires_at": 1700000300, "reply_to": f"/topic/deploykit.reply.{UUID}"}
    reply = {"request_id": UUID, "identity": "web01", "step": "deploy", "state": "ok", "last": True, "message": "done", "data": {"release": "v1.2", "n": 1.5}}
    jsons = [
        (0, commit),
        (1, {"job": "site", "number": 7, "status": "success", "url": "http://ci/job/site/7", "branch": "origin/master"}),
        (2, {"package": "site", "version": "1.0-1", "action": "included", "distribution": "stable"}),
        (3, {"source": "deploys", "text": "web01 deployed v1", "host": "web01"}),
        (4, req),
        (5, reply),
        (6, {"identity": "web01", "classes": ["web"], "facts": {"env": "prod"}, "sites": [{"name": "www", "current": "v1", "repo": "www"}], "version": "0.1.0"}),
        (7, {"repo": "site", "host": "web01", "refname": "refs/heads/master", "newrev": REV_B, "ok": True}),
    ]
    for kind, body in jsons:
        write(t, f"json-{kind}", bytes([kind]) + b"/topic/deploykit.x" + SEP + b"dk-correlation-id:c1\nmessage-id:m1" + SEP + json.dumps(body).encode())
    write(t, "json-bad-version", b"/topic/x" + SEP + b"dk-type:commit\ndk-version:2" + SEP + b"{}")
    write(t, "json-unknown-type", b"/topic/x" + SEP + b"dk-type:pizza\ndk-version:1" + SEP + b"{}")
    legacy = {
        "legacy-commit": ("/topic/future.git.commits", f"subject:[site] refs/heads/master {REV_B}", legacy_commit()),
        "legacy-commit-subject-only": ("/topic/future.git.commits", f"subject:[site] refs/heads/dev {REV_B}", "repo: site\nnewrev: " + REV_B + "\n"),
        "legacy-github": ("/topic/future.github.commits", "", f"repo: site\nrevname: {REV_B}\nrefname: refs/heads/master\n"),
        "legacy-svn": ("/topic/future.svn.commits", "", "repo: svnrepo\nrevname: 1234\nAuthor: bob\nDate: 2024-01-01\nProject: proj\nDirs:\n  trunk/a\n  trunk/b\n\nmessage line\n"),
        "legacy-build": ("/topic/future.jenkins.success", "subject:site #7 SUCCESS", "Status: SUCCESS\nURL: http://ci/job/site/7/\nRepo: site\nBranch: origin/master\nCommit: " + REV_B + "\n"),
        "legacy-build-failure": ("/topic/future.jenkins.failure", "", "Status: FAILURE\nRepo: site\n"),
        "legacy-package": ("/topic/future.packages", "", "package: site\nversion: 1.0-1\naction: included\ndistribution: stable\n"),
        "legacy-event": ("/topic/future.events.stomp-git", "subject:event", "web01  fetched change: [site] x"),
        "keepalive": ("/topic/future.keepalive", "", "\n"),
        "legacy-nothing": ("/topic/x", "", "hello world"),
    }
    for name, (dest, headers, body) in legacy.items():
        write(t, name, dest.encode() + SEP + headers.encode() + SEP + body.encode())


def forge_payload():
    t = "forge_payload"
    repo_gh = {"name": "site", "full_name": "org/site", "clone_url": "https://github.com/org/site.git"}
    head = {"id": REV_B, "message": "Fix it\n\nrepo: evil\nrefname: refs/heads/evil", "timestamp": "2024-01-02T03:04:05Z", "author": {"name": "A", "email": "a@x"}}
    gh_push = {"ref": "refs/heads/master", "before": REV_A, "after": REV_B, "repository": repo_gh, "commits": [head], "head_commit": head, "deleted": False, "pusher": {"name": "a"}}
    gl_push = {"object_kind": "push", "ref": "refs/heads/master", "before": REV_A, "after": REV_B, "project": {"name": "site", "path_with_namespace": "org/site", "git_http_url": "https://gitlab.example/org/site.git"}, "repository": {"name": "site", "url": "git@gitlab.example:org/site.git"}, "commits": [head], "user_name": "A"}
    gl_mr = {"object_kind": "merge_request", "user": {"name": "A"}, "project": {"path_with_namespace": "org/site"}, "object_attributes": {"iid": 3, "title": "T", "action": "open", "url": "https://gitlab.example/org/site/-/merge_requests/3"}}
    seeds = {
        "github-push": (0x00, "push", "application/json", "sha256=" + "0" * 64, gh_push),
        "github-push-fullname": (0x10, "push", "application/json", "", gh_push),
        "github-ping": (0x00, "ping", "application/json", "", {"zen": "z", "hook_id": 1}),
        "github-tag-delete": (0x00, "push", "application/json", "", dict(gh_push, ref="refs/tags/v1", after="0" * 40, deleted=True, commits=[], head_commit=None)),
        "github-other": (0x00, "issues", "application/json", "", {"action": "opened"}),
        "gitlab-push": (0x01, "Push Hook", "application/json", "fuzz-secret", gl_push),
        "gitlab-tag": (0x21, "Tag Push Hook", "application/json", "wrong", dict(gl_push, object_kind="tag_push", ref="refs/tags/v1")),
        "gitlab-mr": (0x01, "Merge Request Hook", "application/json", "", gl_mr),
        "gitea-push": (0x02, "push", "application/json", "0" * 64, gh_push),
        "gitea-push-mapped": (0x22, "push", "", "", gh_push),
    }
    for name, (flags, event, ctype, sig, body) in seeds.items():
        write(t, name, bytes([flags]) + event.encode() + SEP + ctype.encode() + SEP + sig.encode() + SEP + json.dumps(body).encode())
    from urllib.parse import quote

    write(t, "github-form", b"\x00push" + SEP + b"application/x-www-form-urlencoded" + SEP + SEP + b"payload=" + quote(json.dumps(gh_push)).encode())
    write(t, "not-json", b"\x00push" + SEP + b"application/json" + SEP + SEP + b"{not json")


def deploy_signed():
    t = "deploy_signed"
    req = {"request_id": UUID, "action": "deploy", "site": "www", "tag": "v1.2", "user": "alice", "filters": {"identity": ["web01.example", "/^web[0-9]+\\./"], "class": ["web"], "fact": {"env": "prod"}}, "issued_at": 1700000000, "expires_at": 1700000300}
    reply = {"request_id": UUID, "identity": "web01", "step": "fetch", "state": "running", "last": False}
    body = json.dumps(req).encode()
    signer = "dk-signer:ed25519:" + "A" * 43 + "="
    seeds = {
        "signed-request": (0x05, "", body),
        "signed-tampered": (0x07, "", body),
        "unsigned-request": (0x04, "", body),
        "foreign-signer": (0x04, signer + "\ndk-signature:" + "A" * 86 + "==", body),
        "bad-signature-b64": (0x04, "dk-signer:ed25519:!!\ndk-signature:%%%", body),
        "rollback": (0x05, "", json.dumps(dict(req, action="rollback", tag=None)).encode()),
        "discover-regex": (0x05, "", json.dumps(dict(req, action="discover", filters={"identity": ["/(a+)+$/", "/[/", "//"]})).encode()),
        "tags-limit": (0x05, "", json.dumps(dict(req, action="tags", limit=5)).encode()),
        "bad-tag": (0x05, "", json.dumps(dict(req, tag="../../etc")).encode()),
        "reply": (0x09, "", json.dumps(reply).encode()),
        "reply-data": (0x08, "dk-correlation-id:c", json.dumps(dict(reply, state="ok", last=True, data={"x": [1, 2]})).encode()),
        "headers-only": (0x00, "dk-type:deploy-request\ndk-version:1", body),
    }
    for name, (flags, headers, b) in seeds.items():
        write(t, name, bytes([flags]) + headers.encode() + SEP + b)


def web_form():
    t = "web_form"
    for i, body in enumerate(
        [
            "tag=v1&scope=all&canary=1&batch=2&max_failures=0&csrf=t",
            "tag=v1&scope=pick&node=web01&node=web02&batch=50%25",
            "tag=v1&scope=filter&filter=%2F%5Eweb%5B0-9%5D%2B%2F+db01",
            "tag=..%2Fetc&scope=all",
            "tag=v1&canary=-1",
            "tag=v1&batch=0",
            "tag=v1&scope=some",
            "scope=all&preview=1",
            "tag=refs%2Fheads%2Fmaster&max_failures=100001",
            "tag=%FF%FE&node=%00",
        ]
    ):
        write(t, f"form{i:02}", bytes([1 if i % 3 else 0]) + body.encode())


def main():
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    stomp_decoder()
    broker_session()
    broker_url()
    message_decode()
    forge_payload()
    deploy_signed()
    web_form()
    for target in sorted(os.listdir(ROOT)):
        print(f"{target}: {len(os.listdir(os.path.join(ROOT, target)))} seeds")


if __name__ == "__main__":
    main()
