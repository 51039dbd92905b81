#!/usr/bin/env python3
"""Readiness probe: is a STOMP broker really answering on HOST:PORT?

usage: stomp_probe.py HOST PORT [LOGIN PASSCODE] [--vhost VHOST] [--timeout SECS] [--quiet]

Opens a plain TCP socket, sends a STOMP 1.2 CONNECT frame and waits for the
reply frame. Exit codes:
  0  CONNECTED received (prints its headers unless --quiet)
  1  the broker answered with something else (e.g. an ERROR frame) -- printed
  2  could not connect / timed out / connection closed before a reply
  64 usage error
No third-party modules: it runs before anything is installed.
"""
import socket
import sys
import time


def usage(msg=None):
    if msg:
        print(f"stomp_probe: {msg}", file=sys.stderr)
    print(__doc__.strip().splitlines()[2], file=sys.stderr)
    sys.exit(64)


def escape_header(value: str) -> str:
    # CONNECT frames are never escaped in STOMP 1.2; refuse what cannot be sent.
    if any(c in value for c in "\r\n\0"):
        usage("header values may not contain CR, LF or NUL")
    return value


def probe(host, port, login=None, passcode=None, vhost="/", timeout=5.0):
    """Return (code, text)."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return 2, f"connect {host}:{port}: {e}"
    try:
        lines = ["CONNECT", "accept-version:1.0,1.1,1.2", f"host:{escape_header(vhost)}",
                 "heart-beat:0,0"]
        if login is not None:
            lines.append(f"login:{escape_header(login)}")
            lines.append(f"passcode:{escape_header(passcode or '')}")
        frame = ("\n".join(lines) + "\n\n").encode("utf-8") + b"\0"
        sock.sendall(frame)
        buf = b""
        while b"\0" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return 2, f"{host}:{port}: no reply within {timeout}s (got {buf[:200]!r})"
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(4096)
            except socket.timeout:
                continue
            except OSError as e:
                return 2, f"{host}:{port}: recv: {e}"
            if not chunk:
                return 2, f"{host}:{port}: closed before a reply (got {buf[:200]!r})"
            buf += chunk
            buf = buf.lstrip(b"\r\n")  # heart-beat EOLs before the frame
        frame = buf.split(b"\0", 1)[0].decode("utf-8", "replace")
        command = frame.split("\n", 1)[0].strip()
        if command == "CONNECTED":
            try:
                sock.sendall(b"DISCONNECT\n\n\0")
            except OSError:
                pass
            return 0, frame
        return 1, frame
    finally:
        sock.close()


def main(argv):
    args = []
    vhost, timeout, quiet = "/", 5.0, False
    it = iter(argv)
    for a in it:
        if a == "--vhost":
            vhost = next(it, None) or usage("--vhost needs a value")
        elif a == "--timeout":
            try:
                timeout = float(next(it, ""))
            except ValueError:
                usage("--timeout needs a number")
        elif a == "--quiet":
            quiet = True
        elif a.startswith("--"):
            usage(f"unknown option {a}")
        else:
            args.append(a)
    if len(args) not in (2, 4):
        usage()
    host = args[0]
    try:
        port = int(args[1])
    except ValueError:
        usage("PORT must be a number")
    login, passcode = (args[2], args[3]) if len(args) == 4 else (None, None)
    code, text = probe(host, port, login, passcode, vhost, timeout)
    if code == 0:
        if not quiet:
            print(text.strip())
    else:
        print(f"stomp_probe: {text.strip()}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
