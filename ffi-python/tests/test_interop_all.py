"""The interop check: one commit published by the Python hook (a real ``git push``)
and one by the C API, both with ``wire = "legacy"``, are each parsed

* by core (the ``deploykit`` module's subscription, decoded by the Rust core),
* by ``dk-stomp listen --json`` (its ``decoded`` field), and
* by a ``stomp.py`` subscriber reading the legacy text body, as the original daemons did.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import stomp

from helpers import TIMEOUT, GitRig, Receiver

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("DK_BIN_DIR") or REPO / "target" / "debug")
DIST = REPO / "ffi-c" / "dist"
CAPI_REV = "c" * 40

C_PUBLISHER = r"""
#include <deploykit.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: URL COMMITS_DEST EVENTS_DEST\n"); return 2; }
    dk_connect_options co; memset(&co, 0, sizeof co); co.connect_attempts = 2;
    dk_client *client = NULL; dk_error *err = NULL;
    if (dk_client_connect(argv[1], &co, &client, &err) != DK_OK) {
        fprintf(stderr, "connect: %s\n", dk_error_message(err)); dk_error_free(err); return 1;
    }
    dk_commit c; memset(&c, 0, sizeof c);
    c.repo = "capi"; c.oldrev = "0000000000000000000000000000000000000000";
    c.newrev = "CAPI_REV"; c.refname = "refs/heads/main"; c.source = DK_SOURCE_GIT;
    dk_publish_options po; memset(&po, 0, sizeof po);
    po.source = "c-test"; po.wire = DK_WIRE_LEGACY; po.destinations = DK_DESTINATIONS_DEFAULT;
    po.commits_destination = argv[2]; po.events_destination = argv[3];
    int rc = 0;
    if (dk_publish_commit(client, &c, &po, &err) != DK_OK) {
        fprintf(stderr, "publish: %s\n", dk_error_message(err)); dk_error_free(err); rc = 1;
    }
    if (dk_client_disconnect(client, &err) != DK_OK) { dk_error_free(err); rc = 1; }
    return rc;
}
""".replace("CAPI_REV", CAPI_REV)


def build_c_publisher(tmp: Path) -> Path:
    """Compiles the C publisher against the installed libdeploykit (ffi-c/build.sh installs it)."""
    pc = DIST / "lib" / "pkgconfig"
    if not (pc / "deploykit.pc").exists():
        subprocess.run([str(REPO / "ffi-c" / "build.sh")], check=True, timeout=600)
    env = dict(os.environ, PKG_CONFIG_PATH=str(pc))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "deploykit"], env=env, check=True, capture_output=True, text=True).stdout.split()
    libdir = subprocess.run(["pkg-config", "--variable=libdir", "deploykit"], env=env, check=True, capture_output=True, text=True).stdout.strip()
    src = tmp / "capi_publish.c"
    src.write_text(C_PUBLISHER)
    exe = tmp / "capi_publish"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-o", str(exe), str(src), *flags, f"-Wl,-rpath,{libdir}"], check=True)
    return exe


class DkStompListen:
    """`dk-stomp listen --json` in the background; ready once it printed `ready`."""

    def __init__(self, url: str, dest: str, count: int):
        binary = BIN_DIR / "dk-stomp"
        if not os.access(binary, os.X_OK):
            pytest.fail(f"{binary} not built (cargo build --bins)", pytrace=False)
        self.proc = subprocess.Popen(
            [str(binary), "listen", "--broker", url, "--json", "--count", str(count), "--wait", str(TIMEOUT), dest],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.ready = threading.Event()
        self.stderr: list[str] = []

        def pump() -> None:
            for line in self.proc.stderr:
                self.stderr.append(line)
                if line.strip() == "ready":
                    self.ready.set()
            self.ready.set()

        threading.Thread(target=pump, daemon=True).start()
        assert self.ready.wait(TIMEOUT) and self.proc.poll() is None, f"dk-stomp listen not ready: {self.stderr}"

    def lines(self) -> list[dict]:
        out, _ = self.proc.communicate(timeout=TIMEOUT + 5)
        assert self.proc.returncode == 0, f"dk-stomp listen exited {self.proc.returncode}: {self.stderr}"
        return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_hook_and_c_api_parsed_by_core_dk_stomp_and_stomp_py(tmp_path, embedded_url):
    if shutil.which("gcc") is None or shutil.which("pkg-config") is None:
        pytest.fail("gcc and pkg-config are needed (scripts/test installs them)", pytrace=False)
    exe = build_c_publisher(tmp_path)
    rig = GitRig(tmp_path, embedded_url, wire="legacy")
    dest = rig.commits_dest

    # 1. stomp.py, reading the legacy body as the original daemons did.
    host, port = embedded_url.rsplit("/", 1)[1].rsplit(":", 1)
    bodies: list[str] = []
    two = threading.Event()
    subscribed = threading.Event()

    class Listener(stomp.ConnectionListener):
        def on_message(self, frame):
            bodies.append(frame.body if isinstance(frame.body, str) else frame.body.decode())
            if len(bodies) >= 2:
                two.set()

        def on_receipt(self, frame):
            subscribed.set()

    conn = stomp.Connection12([(host, int(port))])
    conn.set_listener("", Listener())
    conn.connect(wait=True)
    conn.subscribe(dest, id="interop", ack="auto", headers={"receipt": "interop-sub"})
    # 2. core, through the Python module.
    receiver = Receiver(embedded_url, dest, rig.events_dest)
    try:
        assert subscribed.wait(TIMEOUT), "stomp.py SUBSCRIBE not confirmed"
        # 3. dk-stomp listen --json.
        listener = DkStompListen(embedded_url, dest, 2)

        head = rig.commit("From the hook")
        rig.push("main")
        first = receiver.take(1)[0]  # the hook's message is in before the C one is sent
        subprocess.run([str(exe), embedded_url, dest, rig.events_dest], check=True, timeout=TIMEOUT)
        second = receiver.take(1)[0]

        expected = {"site": head, "capi": CAPI_REV}
        # Core: both decode to commits, neither carries dk-type (legacy wire).
        for msg in (first, second):
            assert "dk-type" not in msg.headers
            decoded = msg.decoded()
            assert decoded["kind"] == "commit"
            assert decoded["newrev"] == expected[decoded["repo"]]
            assert decoded["refname"] == "refs/heads/main"
        assert {first.decoded()["repo"], second.decoded()["repo"]} == {"site", "capi"}

        # dk-stomp listen --json: the same two, decoded by core inside the tool.
        seen = listener.lines()
        assert len(seen) == 2
        for line in seen:
            assert line["decoded"]["kind"] == "commit", line
            assert line["decoded"]["newrev"] == expected[line["decoded"]["repo"]]
            assert line["body"].startswith("repo: ")

        # stomp.py: the legacy text, split at the first ':' as the old receivers did.
        assert two.wait(TIMEOUT), f"stomp.py got {len(bodies)} of 2"
        for body in bodies:
            fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in body.splitlines()[:4])}
            assert fields["newrev"] == expected[fields["repo"]]
            assert fields["refname"] == "refs/heads/main"
    finally:
        conn.disconnect()
        receiver.close()
