#!/usr/bin/env python3
"""Watch sites' `current` links while a deploy runs: every few milliseconds, each
link must point to a complete release (a directory holding file.txt).

    linkwatch.py STOPFILE OUTFILE LINK...

Prints `ready` once it has looked at every link; runs until STOPFILE exists (at
most 10 minutes); writes `polls=N violations=M` and one line per violation
(time, link, what it pointed to) to OUTFILE.
"""
import os
import sys
import time


def complete(link: str) -> str:
    """'' when `link` points to a complete release, else what is wrong."""
    try:
        target = os.readlink(link)
    except OSError as e:
        return f"unreadable link: {e.strerror}"
    path = target if os.path.isabs(target) else os.path.join(os.path.dirname(link), target)
    if not os.path.isdir(path):
        return f"-> {target}: not a directory"
    if not os.path.isfile(os.path.join(path, "file.txt")):
        return f"-> {target}: no file.txt (incomplete)"
    return ""


def main() -> int:
    stop, out, links = sys.argv[1], sys.argv[2], sys.argv[3:]
    polls, bad = 0, []
    deadline = time.monotonic() + 600
    first = True
    while not os.path.exists(stop) and time.monotonic() < deadline:
        for link in links:
            why = complete(link)
            polls += 1
            if why and len(bad) < 100:
                bad.append(f"{time.time():.3f} {link} {why}")
        if first:
            print("ready", flush=True)
            first = False
        time.sleep(0.002)
    with open(out, "w", encoding="utf-8") as f:
        f.write(f"polls={polls} violations={len(bad)}\n")
        f.writelines(b + "\n" for b in bad)
    return 0


if __name__ == "__main__":
    sys.exit(main())
