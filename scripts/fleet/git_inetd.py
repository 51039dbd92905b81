#!/usr/bin/env python3
"""Serve git:// for the fleet's git host: `git daemon --inetd` per connection.

    git_inetd.py ADDR PORT BASE_PATH

`git daemon` itself listens with a backlog of 5 and serves at most 32
connections at once (it drops the rest): when 100 or 300 servers fetch the same
push at the same moment, connections are lost in the accept queue and their
fetches wait for `git_timeout`. A real git server sits behind a proper listener;
this one accepts with a backlog of 4096 and hands each connection to its own
`git daemon --inetd` (argument vector, no shell), so the fleet measures
deploykit rather than git daemon's listener. Runs until SIGTERM.
"""
import os
import signal
import socket
import subprocess
import sys


def main() -> int:
    addr, port, base = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    argv = ["git", "daemon", "--inetd", "--export-all", f"--base-path={base}", base]
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(4096)
    # (SIGCHLD keeps its default: an ignored SIGCHLD would be inherited by git, whose
    # upload-pack then cannot wait for pack-objects and reports a corrupt repository)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    children = []
    while True:
        try:
            conn, _ = srv.accept()
        except InterruptedError:
            continue
        children = [c for c in children if c.poll() is None]  # reap the finished ones
        try:
            children.append(subprocess.Popen(argv, stdin=conn.fileno(), stdout=conn.fileno(), stderr=subprocess.DEVNULL, close_fds=True))
        except OSError as e:
            print(f"git_inetd: {e}", file=sys.stderr, flush=True)
        finally:
            conn.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        os._exit(0)
