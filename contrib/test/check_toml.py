"""check_toml.py DIR [OTHER_DIR]: the configs in DIR carry the test values
(puppet-test.pp, ansible-test.yml) exactly, quotes and backslashes included;
with OTHER_DIR, both directories' configs parse to the same data. Exit 1 on a mismatch."""
import sys
import tomllib

DAEMONS = ["fetch", "agent", "apt-watch", "web", "webhook", "jenkins", "reprepro", "keepalive"]
BROKER = {
    "url": "failover://(stomp://mq1.example.com:61613,stomp://mq2.example.com:61613)?randomize=false",
    "login": 'ops "deploy" \\ team',
    "passcode_file": "/etc/deploykit/passcode",
}
NOTE = 'a "b" \\ c\n[sites.evil]\nrepo = "/"'


def load(d, name):
    with open(f"{d}/{name}.toml", "rb") as f:
        return tomllib.load(f)


def main():
    problems = []
    docs = {n: load(sys.argv[1], n) for n in DAEMONS}
    for n, doc in docs.items():
        if doc.get("broker") != BROKER:
            problems.append(f"{n}: broker is {doc.get('broker')!r}")
        if n != "keepalive" and doc.get("wire") != "legacy":
            problems.append(f"{n}: wire is {doc.get('wire')!r}")
    want = {
        ("fetch", "repos"): {"site": {"path": "/srv/git/site", "mode": "trusting", "target": "/srv/www/site", "branch": "main", "remote": "origin"}},
        ("fetch", "max_parallel"): 2,
        ("agent", "facts"): {"sitetype": "live", "note": NOTE},
        ("agent", "classes"): ["web"],
        ("agent", "sites"): {"site": {"repo": "/srv/git/site", "releases": "/srv/releases/site", "current": "/srv/www/site-current",
                                      "hooks": "/etc/deploykit/hooks/site", "step_timeout": "5m", "keep_releases": 5, "deploy": ["ops"]}},
        ("keepalive", "target"): [{"name": "commits", "destination": "/topic/deploykit.git.commits"}],
        ("web", "auth"): {"mode": "basic", "htpasswd": "/etc/deploykit/web.htpasswd"},
        ("reprepro", "dists"): {"bookworm": {"incoming": "/var/lib/deploykit/reprepro/incoming/bookworm"}},
    }
    for (n, k), v in want.items():
        if docs[n].get(k) != v:
            problems.append(f"{n}: {k} is {docs[n].get(k)!r}, want {v!r}")
    if not str(docs["agent"].get("trusted_keys", {}).get("ops", "")).startswith("ed25519:"):
        problems.append("agent: trusted_keys.ops missing")
    if len(sys.argv) > 2:
        for n in DAEMONS:
            if load(sys.argv[2], n) != docs[n]:
                problems.append(f"{n}: {sys.argv[1]} and {sys.argv[2]} differ")
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
