"""Helpers for the hook tests: a real bare git repository with the example hook
installed, a work clone that pushes into it, a real Subversion repository, and a
receiver subscribed (before anything is pushed) to the hook's destinations.

Commands run with argument vectors; nothing goes through a shell.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Dict, List, Optional

import deploykit

TIMEOUT = 15.0
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "hooks"
VENV_BIN = Path(sys.executable).parent
ZERO = "0" * 40


def unique(kind: str = "topic") -> str:
    return f"/{kind}/dk-pytest.{uuid.uuid4().hex[:12]}"


def run(argv: List[str], cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None, check: bool = True, stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"{argv} exited {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


class Receiver:
    """Subscribed to a commits and an events destination; waits for messages with bounded timeouts."""

    def __init__(self, url: str, commits: str, events: str):
        self.client = deploykit.Client(url, timeout=TIMEOUT)
        self.commits = self.client.subscribe(commits)
        self.events = self.client.subscribe(events)

    def take(self, n: int, which: str = "commits", timeout: float = TIMEOUT) -> List[deploykit.Message]:
        sub = self.commits if which == "commits" else self.events
        out = []
        for _ in range(n):
            m = sub.next_message(timeout=timeout)
            assert m is not None, f"expected {n} message(s) on {sub.destination}, got {len(out)} within {timeout}s"
            out.append(m)
        return out

    def assert_quiet(self, which: str = "commits", timeout: float = 0.3) -> None:
        sub = self.commits if which == "commits" else self.events
        m = sub.next_message(timeout=timeout)
        assert m is None, f"unexpected message on {sub.destination}: {m.headers} {m.body!r}"

    def close(self) -> None:
        self.client.close()


class GitRig:
    """A bare repository `site.git` with examples/hooks/post-receive installed, and a work clone."""

    def __init__(self, tmp: Path, broker_url: str, wire: str = "json"):
        self.tmp = tmp
        self.bare = tmp / "site.git"
        self.work = tmp / "work"
        self.commits_dest = unique()
        self.events_dest = unique()
        home = tmp / "home"
        home.mkdir()
        self.config_file = tmp / "hooks.toml"
        # The three configuration sources, each used for real: the file names the
        # broker, git config the commits destination, the environment the rest.
        self.config_file.write_text(f'broker_url = "{broker_url}"\ntimeout = 5.0\n\n[svn]\nwire = "legacy"\n')
        self.env = {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Dev One",
            "GIT_AUTHOR_EMAIL": "dev@example.com",
            "GIT_COMMITTER_NAME": "Dev One",
            "GIT_COMMITTER_EMAIL": "dev@example.com",
            "DK_HOOKS_CONFIG": str(self.config_file),
            "DK_EVENTS_DESTINATION": self.events_dest,
            "DK_WIRE": wire,
        }
        run(["git", "init", "--quiet", "--bare", str(self.bare)], env=self.env)
        run(["git", "--git-dir", str(self.bare), "config", "deploykit.commitsDestination", self.commits_dest], env=self.env)
        hook = self.bare / "hooks" / "post-receive"
        shutil.copyfile(EXAMPLES / "post-receive", hook)
        hook.chmod(0o755)
        run(["git", "init", "--quiet", "-b", "main", str(self.work)], env=self.env)
        run(["git", "remote", "add", "origin", str(self.bare)], cwd=self.work, env=self.env)
        self.n = 0

    @property
    def spool(self) -> Path:
        return self.bare / "deploykit-spool"

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["git", *args], cwd=self.work, env=self.env, check=check)

    def commit(self, message: str, date: str = "2026-11-25T10:00:00+01:00") -> str:
        self.n += 1
        (self.work / f"file{self.n}.txt").write_text(f"{message}\n")
        self.git("add", "-A")
        env = dict(self.env, GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
        run(["git", "commit", "--quiet", "-m", message], cwd=self.work, env=env)
        return self.git("rev-parse", "HEAD").stdout.strip()

    def push(self, *refspecs: str) -> subprocess.CompletedProcess:
        return self.git("push", "--quiet", "origin", *refspecs)


class SvnRig:
    """A Subversion repository `svnrepo` with examples/hooks/post-commit installed, and a checkout."""

    def __init__(self, tmp: Path, broker_url: str, env_extra: Optional[Dict[str, str]] = None):
        self.repos = tmp / "svnrepo"
        self.wc = tmp / "wc"
        self.commits_dest = unique()
        self.events_dest = unique()
        self.config_file = tmp / "svn-hooks.toml"
        self.config_file.write_text(
            f'broker_url = "{broker_url}"\n\n[svn]\ncommits_destination = "{self.commits_dest}"\n'
            f'events_destination = "{self.events_dest}"\n'
        )
        run(["svnadmin", "create", str(self.repos)])
        hook = self.repos / "hooks" / "post-commit"
        shutil.copyfile(EXAMPLES / "post-commit", hook)
        hook.chmod(0o755)
        # Subversion runs hooks with an empty environment; conf/hooks-env gives them one.
        lines = ["[default]", f"PATH = {VENV_BIN}:/usr/local/bin:/usr/bin:/bin", f"DK_HOOKS_CONFIG = {self.config_file}"]
        lines += [f"{k} = {v}" for k, v in (env_extra or {}).items()]
        (self.repos / "conf" / "hooks-env").write_text("\n".join(lines) + "\n")
        self.env = dict(os.environ, HOME=str(tmp), LANG="C.UTF-8")
        run(["svn", "checkout", "--quiet", f"file://{self.repos}", str(self.wc)], env=self.env)

    def svn(self, *args: str) -> subprocess.CompletedProcess:
        return run(["svn", *args], cwd=self.wc, env=self.env)
