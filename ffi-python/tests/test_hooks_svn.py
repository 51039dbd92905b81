"""The Subversion post-commit hook end to end: a real repository (svnadmin),
examples/hooks/post-commit installed, a real `svn commit` through a checkout,
and the commit message read back from the broker."""
from __future__ import annotations

import shutil

import pytest

from helpers import SvnRig, Receiver

pytestmark = pytest.mark.skipif(shutil.which("svnadmin") is None, reason="Subversion not installed (scripts/python-suite.sh installs it)")


def test_svn_commit_publishes_project_from_trunk(tmp_path, broker_url):
    rig = SvnRig(tmp_path, broker_url)
    receiver = Receiver(broker_url, rig.commits_dest, rig.events_dest)
    try:
        (rig.wc / "webapp" / "trunk" / "src").mkdir(parents=True)
        (rig.wc / "webapp" / "trunk" / "src" / "index.php").write_text("<?php echo 'hi';\n")
        (rig.wc / "webapp" / "trunk" / "README").write_text("webapp\n")
        rig.svn("add", "--quiet", "webapp")
        out = rig.svn("commit", "--username", "alice", "-m", "Add the webapp\n\nFirst version.")
        assert "Committed revision 1." in out.stdout
        assert "deploykit:" not in out.stderr, out.stderr

        msg = receiver.take(1)[0]
        assert msg.headers["subject"] == "[svnrepo] 1 "
        assert msg.headers["dk-correlation-id"] == "svn:svnrepo:1"
        c = msg.decoded()
        assert (c["repo"], c["newrev"], c["source"]) == ("svnrepo", "1", "svn")
        assert c["svn"]["revision"] == 1
        assert c["svn"]["project"] == "webapp"
        assert set(c["svn"]["dirs"]) >= {"webapp/trunk/", "webapp/trunk/src/"}
        (info,) = c["commits"]
        assert info["author"] == "alice"
        assert info["message"] == "Add the webapp\n\nFirst version."
        assert len(info["timestamp"]) == 25 and info["timestamp"][10] == "T", info["timestamp"]
        ev = receiver.take(1, "events")[0].decoded()
        assert (ev["source"], ev["text"]) == ("svn-hook", "commit [svnrepo] 1 ")
    finally:
        receiver.close()


def test_svn_legacy_body(tmp_path, embedded_url):
    rig = SvnRig(tmp_path, embedded_url, env_extra={"DK_WIRE": "legacy"})
    receiver = Receiver(embedded_url, rig.commits_dest, rig.events_dest)
    try:
        (rig.wc / "api" / "trunk").mkdir(parents=True)
        (rig.wc / "api" / "trunk" / "main.c").write_text("int main(void) { return 0; }\n")
        rig.svn("add", "--quiet", "api")
        rig.svn("commit", "--username", "bob", "-m", "API skeleton")
        msg = receiver.take(1)[0]
        assert "dk-type" not in msg.headers
        assert msg.text.startswith("repo: svnrepo\nrevname: 1\nAuthor: bob\n")
        assert "Project: api\n" in msg.text
        c = msg.decoded()
        assert (c["svn"]["project"], c["commits"][0]["author"], c["commits"][0]["message"]) == ("api", "bob", "API skeleton")
    finally:
        receiver.close()


def test_svn_broker_down_is_spooled(tmp_path, embedded_url, closed_port):
    # Subversion shows a post-commit hook's stderr only when it exits non-zero:
    # fail_on_error makes the warning visible (the commit is done either way).
    env = {"DK_BROKER_URL": f"stomp://127.0.0.1:{closed_port}", "DK_FAIL_ON_ERROR": "1"}
    rig = SvnRig(tmp_path, embedded_url, env_extra=env)
    (rig.wc / "webapp" / "trunk").mkdir(parents=True)
    (rig.wc / "webapp" / "trunk" / "a").write_text("a\n")
    rig.svn("add", "--quiet", "webapp")
    out = rig.svn("commit", "--username", "carol", "-m", "While down")
    assert "Committed revision 1." in out.stdout
    said = out.stdout + out.stderr  # svn 1.14 prints the hook's warning on stdout
    assert "post-commit hook failed" in said and "could not publish to the broker" in said, said
    assert len(list((rig.repos / "deploykit-spool").glob("*.msg"))) == 2
