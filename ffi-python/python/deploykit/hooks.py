"""Commit hooks: publish a commit message for every git push or SVN commit.

Usage (the one-line hook scripts of ``examples/hooks/`` run these)::

    python3 -m deploykit.hooks git-post-receive          # post-receive; reads "old new ref" lines on stdin
    python3 -m deploykit.hooks svn-post-commit REPOS REV  # post-commit
    python3 -m deploykit.hooks drain [--spool DIR]        # send what earlier runs spooled

Every message is written to a spool directory first and then sent, oldest
first, each deleted once the broker confirmed it. A broker that is down never
blocks or fails the push: after a bounded time (``timeout``, 5 s by default) the
hook prints one line on stderr and exits 0 (``fail_on_error = true`` makes it exit
1), and the next run sends what is left before its own messages.

Configuration, lowest precedence first: built-in defaults, ``/etc/deploykit/hooks.toml``
(``DK_HOOKS_CONFIG`` names another file; ``[git]`` and ``[svn]`` tables override
the top level for that hook), ``git config deploykit.*`` (git only), then ``DK_*``
environment variables. See :data:`SETTINGS` for every key.

Nothing is ever run through a shell: git is read with libgit2 and SVN with
``svnlook`` called with an argument vector, both in the Rust core.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, TextIO, Tuple

from . import _native
from ._native import Client, Error, Spool

DEFAULT_CONFIG = "/etc/deploykit/hooks.toml"
ZERO = "0" * 40


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), not {value!r}")


def _positive_float(value: Any) -> float:
    f = float(value)
    if not f > 0:
        raise ValueError(f"expected a positive number of seconds, not {value!r}")
    return f


def _positive_int(value: Any) -> int:
    i = int(value)
    if i < 0:
        raise ValueError(f"expected a non-negative integer, not {value!r}")
    return i


def _wire(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("json", "legacy"):
        raise ValueError(f'expected "json" or "legacy", not {value!r}')
    return text


def _destinations(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    text = str(value).strip().lower()
    if text not in ("default", "legacy"):
        raise ValueError(f'expected "default", "legacy" or a table, not {value!r}')
    return text


@dataclass(frozen=True)
class Setting:
    """One configuration key: its name in hooks.toml, its environment variable and git key."""

    name: str
    env: str
    git: Optional[str]
    parse: Callable[[Any], Any]
    doc: str


#: Every setting: hooks.toml key, environment variable, ``git config`` key, meaning.
SETTINGS: Tuple[Setting, ...] = (
    Setting("broker_url", "DK_BROKER_URL", "deploykit.brokerUrl", str, "broker URL (stomp://, stomp+ssl://, failover:(…))"),
    Setting("login", "DK_BROKER_LOGIN", "deploykit.login", str, "STOMP login (overrides the URL's)"),
    Setting("passcode", "DK_BROKER_PASSCODE", "deploykit.passcode", str, "STOMP passcode (overrides the URL's)"),
    Setting("vhost", "DK_BROKER_VHOST", "deploykit.vhost", str, "STOMP virtual host (host header)"),
    Setting("repo", "DK_REPO", "deploykit.repo", str, "repository name in messages (default: directory name without .git)"),
    Setting("wire", "DK_WIRE", "deploykit.wire", _wire, 'body format: "json" or "legacy" (future-deploykit text)'),
    Setting("destinations", "DK_DESTINATIONS", "deploykit.destinations", _destinations, '"default", "legacy" (future.* topics) or a table'),
    Setting("commits_destination", "DK_COMMITS_DESTINATION", "deploykit.commitsDestination", str, "where commit messages go"),
    Setting("events_destination", "DK_EVENTS_DESTINATION", "deploykit.eventsDestination", str, "where event lines go ({source} is replaced)"),
    Setting("event_source", "DK_EVENT_SOURCE", "deploykit.eventSource", str, "speaker of the event line (default git-hook / svn-hook)"),
    Setting("spool_dir", "DK_SPOOL_DIR", "deploykit.spoolDir", str, "spool directory (default: REPO/deploykit-spool)"),
    Setting("timeout", "DK_HOOK_TIMEOUT", "deploykit.timeout", _positive_float, "seconds the hook may spend on the broker (default 5)"),
    Setting("fail_on_error", "DK_FAIL_ON_ERROR", "deploykit.failOnError", _bool, "exit 1 when the message could not be sent now"),
    Setting("max_commits", "DK_MAX_COMMITS", "deploykit.maxCommits", _positive_int, "most commits described per ref (default 50)"),
    Setting("svnlook", "DK_SVNLOOK", None, str, "svnlook program (default: found on PATH)"),
)


@dataclass
class HookConfig:
    """The hooks' settings once every source was read (see :data:`SETTINGS`)."""

    broker_url: str = "stomp://127.0.0.1:61613"
    login: Optional[str] = None
    passcode: Optional[str] = None
    vhost: str = "/"
    repo: Optional[str] = None
    wire: str = "json"
    destinations: Any = "default"
    commits_destination: Optional[str] = None
    events_destination: Optional[str] = None
    event_source: Optional[str] = None
    spool_dir: Optional[str] = None
    timeout: float = 5.0
    fail_on_error: bool = False
    max_commits: int = 50
    svnlook: Optional[str] = None
    #: Problems met while reading the configuration (printed, never fatal).
    warnings: List[str] = field(default_factory=list)

    def destinations_arg(self) -> Any:
        """The ``destinations`` argument for the native API: the chosen base
        (``"default"``, ``"legacy"`` or a table) with the single-destination overrides."""
        overrides = {}
        if self.commits_destination:
            overrides["commits"] = self.commits_destination
        if self.events_destination:
            overrides["events"] = self.events_destination
        if not overrides:
            return self.destinations
        if isinstance(self.destinations, dict):
            return {**self.destinations, **overrides}
        return {"base": self.destinations, **overrides}


def _read_toml(path: Path) -> Dict[str, Any]:
    try:
        import tomllib  # Python 3.11+
    except ImportError:  # pragma: no cover - older Pythons
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise ValueError("reading it needs Python 3.11+ or the tomli package") from None
    with open(path, "rb") as f:
        return tomllib.load(f)


def load_config(
    kind: str,
    git_dir: Optional[Path] = None,
    env: Optional[Mapping[str, str]] = None,
) -> HookConfig:
    """Reads the configuration for hook ``kind`` (``"git"`` or ``"svn"``): defaults,
    then hooks.toml (top level, then its ``[git]``/``[svn]`` table), then ``git config
    deploykit.*`` of ``git_dir``, then ``DK_*`` variables of ``env``."""
    env = os.environ if env is None else env
    cfg = HookConfig()
    by_name = {s.name: s for s in SETTINGS}

    def put(setting: Setting, value: Any, origin: str) -> None:
        try:
            setattr(cfg, setting.name, setting.parse(value))
        except (TypeError, ValueError) as e:
            cfg.warnings.append(f"{origin}: ignoring {setting.name}: {e}")

    explicit = env.get("DK_HOOKS_CONFIG")
    path = Path(explicit or DEFAULT_CONFIG)
    if path.is_file():
        try:
            data = _read_toml(path)
        except (OSError, ValueError) as e:
            cfg.warnings.append(f"cannot read {path}: {e}")
            data = {}
        tables = {k: v for k, v in data.items() if k in ("git", "svn") and isinstance(v, dict)}
        for layer, origin in ((data, str(path)), (tables.get(kind, {}), f"{path} [{kind}]")):
            for key, value in layer.items():
                if key in ("git", "svn") and layer is data:
                    continue
                setting = by_name.get(key)
                if setting is None:
                    cfg.warnings.append(f"{origin}: unknown key {key!r} ignored")
                    continue
                put(setting, value, origin)
    elif explicit:
        cfg.warnings.append(f"DK_HOOKS_CONFIG={explicit}: no such file; using defaults")

    if kind == "git" and git_dir is not None:
        for setting in SETTINGS:
            if setting.git is None:
                continue
            try:
                value = _native.git_config(git_dir, setting.git)
            except Error as e:
                cfg.warnings.append(f"git config {setting.git}: {e}")
                continue
            if value is not None:
                put(setting, value, f"git config {setting.git}")

    for setting in SETTINGS:
        value = env.get(setting.env)
        if value is not None and value != "":
            put(setting, value, setting.env)
    return cfg


def _say(stream: TextIO, text: str) -> None:
    """One line on stderr, prefixed so a pusher sees where it comes from (``remote: deploykit: …``)."""
    print(f"deploykit: {text}", file=stream, flush=True)


def deliver(
    cfg: HookConfig,
    commits: List[Dict[str, Any]],
    default_spool: Path,
    event_source: str,
    stderr: TextIO = sys.stderr,
) -> int:
    """Spools ``commits`` (and their event lines), then sends everything spooled,
    oldest first, within ``cfg.timeout`` seconds. Returns the exit status."""
    started = time.monotonic()
    source = cfg.event_source or event_source
    destinations = cfg.destinations_arg()
    failed = False
    spool: Optional[Spool] = None
    spool_dir = Path(cfg.spool_dir) if cfg.spool_dir else default_spool
    try:
        spool = Spool(spool_dir)
    except Error as e:
        _say(stderr, f"{e}; sending without a spool (a broker failure would lose this push's messages)")
        failed = True

    direct: List[Dict[str, Any]] = []
    for commit in commits:
        if spool is None:
            direct.append(commit)
            continue
        try:
            spool.push_commit(commit, source=source, wire=cfg.wire, destinations=destinations)
        except (Error, ValueError, TypeError) as e:
            _say(stderr, f"cannot spool the message for {commit.get('refname') or commit.get('newrev')}: {e}")
            failed = True
            direct.append(commit)

    if spool is not None and not direct and not spool.pending():
        return 1 if (failed and cfg.fail_on_error) else 0

    def remaining() -> float:
        return max(cfg.timeout - (time.monotonic() - started), 0.5)

    client: Optional[Client] = None
    try:
        client = Client(
            cfg.broker_url,
            vhost=cfg.vhost,
            login=cfg.login,
            passcode=cfg.passcode,
            timeout=remaining(),
            connect_attempts=2,
        )
        sent_spooled = 0
        if spool is not None:
            sent_spooled = spool.drain(client, timeout=remaining())
        for commit in direct:
            client.publish_commit(
                commit["repo"],
                commit.get("oldrev", ""),
                commit.get("newrev", ""),
                commit.get("refname", ""),
                source=commit.get("source", "git"),
                commits=commit.get("commits"),
                svn=commit.get("svn"),
                correlation_id=commit.get("correlation_id"),
                wire=cfg.wire,
                destinations=destinations,
                event_source=source,
            )
        earlier = sent_spooled - 2 * (len(commits) - len(direct))
        if earlier > 0:
            _say(stderr, f"also sent {earlier} message(s) spooled by an earlier run")
    except Error as e:
        failed = True
        left = len(spool.pending()) if spool is not None else 0
        where = f"{left} message(s) kept in {spool.dir}, sent by the next hook run" if spool is not None else "message(s) NOT kept (no spool)"
        _say(stderr, f"could not publish to the broker ({type(e).__name__}: {e}); {where}")
    finally:
        if client is not None and not failed:
            try:
                client.close()  # everything is confirmed already: a failing DISCONNECT loses nothing
            except Error:
                pass
        del client
    return 1 if (failed and cfg.fail_on_error) else 0


def _parse_updates(lines: Iterable[str], stderr: TextIO) -> List[Tuple[str, str, str]]:
    updates = []
    for n, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            _say(stderr, f"ignoring malformed post-receive line {n}: {line.strip()!r}")
            continue
        updates.append((parts[0], parts[1], parts[2]))
    return updates


def git_post_receive(
    stdin: TextIO = sys.stdin,
    stderr: TextIO = sys.stderr,
    env: Optional[Mapping[str, str]] = None,
) -> int:
    """The post-receive hook: one commit message per updated ref."""
    env = os.environ if env is None else env
    git_dir = Path(env.get("GIT_DIR") or ".").resolve()
    cfg = load_config("git", git_dir, env)
    for w in cfg.warnings:
        _say(stderr, w)
    repo = cfg.repo or _native.repo_name(git_dir)
    commits = []
    for old, new, ref in _parse_updates(stdin, stderr):
        try:
            infos = _native.read_git_push(git_dir, old, new, ref, cfg.max_commits)
        except Error as e:
            _say(stderr, f"skipping {ref}: {e}")
            continue
        commits.append(
            {
                "repo": repo,
                "oldrev": old,
                "newrev": new,
                "refname": ref,
                "source": "git",
                "commits": infos,
                "correlation_id": new,
            }
        )
    return deliver(cfg, commits, git_dir / "deploykit-spool", "git-hook", stderr)


def svn_post_commit(
    repos: str,
    rev: str,
    stderr: TextIO = sys.stderr,
    env: Optional[Mapping[str, str]] = None,
) -> int:
    """The post-commit hook: one commit message for revision ``rev`` of ``repos``."""
    env = os.environ if env is None else env
    repos_path = Path(repos).resolve()
    cfg = load_config("svn", None, env)
    for w in cfg.warnings:
        _say(stderr, w)
    try:
        revision = int(rev)
        if revision < 0:
            raise ValueError
    except ValueError:
        _say(stderr, f"invalid revision {rev!r}: expected a revision number")
        return 1 if cfg.fail_on_error else 0
    svnlook = cfg.svnlook or shutil.which("svnlook", path=env.get("PATH") or os.defpath) or "svnlook"
    name = cfg.repo or _native.repo_name(repos_path)
    try:
        commit = _native.read_svn_commit(repos_path, revision, name, svnlook)
    except Error as e:
        _say(stderr, f"cannot read r{revision}: {e}")
        return 1 if cfg.fail_on_error else 0
    return deliver(cfg, [commit], repos_path / "deploykit-spool", "svn-hook", stderr)


def drain_command(spool_dir: Optional[str], stderr: TextIO = sys.stderr, env: Optional[Mapping[str, str]] = None) -> int:
    """Sends what earlier runs spooled (e.g. from cron after a broker outage)."""
    env = os.environ if env is None else env
    git_dir = Path(env["GIT_DIR"]).resolve() if env.get("GIT_DIR") else None
    cfg = load_config("git" if git_dir else "svn", git_dir, env)
    for w in cfg.warnings:
        _say(stderr, w)
    directory = spool_dir or cfg.spool_dir or (str(git_dir / "deploykit-spool") if git_dir else None)
    if not directory:
        _say(stderr, "no spool directory: pass --spool DIR or set DK_SPOOL_DIR")
        return 2
    cfg.spool_dir = directory
    status = deliver(cfg, [], Path(directory), "git-hook", stderr)
    left = len(Spool(directory).pending())
    if left:
        _say(stderr, f"{left} message(s) still spooled in {directory}")
        return 1
    return status


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m deploykit.hooks``: parse the arguments and run one hook."""
    parser = argparse.ArgumentParser(
        prog="python -m deploykit.hooks",
        description="Publish deploykit commit messages from git and Subversion hooks.",
        epilog="Configuration: /etc/deploykit/hooks.toml (or DK_HOOKS_CONFIG), git config deploykit.*, "
        "DK_* environment variables; see examples/hooks/README.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("git-post-receive", help='git post-receive: reads "OLD NEW REF" lines on stdin')
    svn = sub.add_parser("svn-post-commit", help="Subversion post-commit: REPOS REV")
    svn.add_argument("repos")
    svn.add_argument("rev")
    drain = sub.add_parser("drain", help="send the messages earlier runs spooled")
    drain.add_argument("--spool", help="spool directory (default: DK_SPOOL_DIR, or $GIT_DIR/deploykit-spool)")
    args = parser.parse_args(argv)
    try:
        if args.command == "git-post-receive":
            return git_post_receive()
        if args.command == "svn-post-commit":
            return svn_post_commit(args.repos, args.rev)
        return drain_command(args.spool)
    except KeyboardInterrupt:
        _say(sys.stderr, "interrupted")
        return 130
    except Exception as e:  # a hook must never fail a push by surprise
        _say(sys.stderr, f"internal error ({type(e).__name__}: {e}); please report it")
        return 1 if os.environ.get("DK_FAIL_ON_ERROR", "").lower() in ("1", "true", "yes", "on") else 0


if __name__ == "__main__":
    sys.exit(main())
