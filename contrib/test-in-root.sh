#!/bin/bash
# contrib/test-in-root.sh ROOT: the Puppet module and the Ansible role of contrib/, applied
# in a Debian 12 root (debootstrap --variant=minbase bookworm ROOT MIRROR) that already has
# deploykit-server, -hub and -cli installed, with /proc mounted. Prints one TAP line per
# check (ok - NAME / not ok - NAME) and '# ' comments (timings, failure output); no plan
# or summary line: the caller counts. Run as root.
#
# Environment: DK_CM_MANAGE_PACKAGES=true|false (default true: the packages are declared,
# and must already be there, so declaring them changes nothing; false while developing
# without packages). DK_CM_LOG_DIR: where the full outputs go (default: a new temp dir).
#
# Both tools write /etc/deploykit (Ansible after Puppet, over Puppet's files); Puppet's
# files are saved to /tmp/dk-cm-puppet in the root first and compared with Ansible's.
set -uo pipefail

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
    echo "usage: $0 ROOT" >&2
    exit 2
fi
ROOT=$(cd "$1" && pwd)
CONTRIB=$(cd "$(dirname "$0")" && pwd)
MANAGE_PACKAGES=${DK_CM_MANAGE_PACKAGES:-true}
case $MANAGE_PACKAGES in
    true | false) ;;
    *) echo "DK_CM_MANAGE_PACKAGES must be true or false" >&2; exit 2 ;;
esac
LOGS=${DK_CM_LOG_DIR:-$(mktemp -d /tmp/dk-cm-logs.XXXXXX)}
mkdir -p "$LOGS"
echo "# logs in $LOGS"

DAEMONS=(fetch agent apt-watch web webhook jenkins reprepro keepalive)

# in_root [VAR=VALUE...] COMMAND ARG...: run in the root with a clean environment.
in_root() {
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

# report NAME STATUS [LOG]: one TAP line; on failure the end of LOG as comments.
report() {
    if [ "$2" -eq 0 ]; then
        printf 'ok - %s\n' "$1"
    else
        printf 'not ok - %s\n' "$1"
        if [ $# -ge 3 ] && [ -f "$3" ]; then
            tail -n 25 -- "$3" | sed 's/^/#   /'
        fi
    fi
}

# check NAME LOGNAME COMMAND...: run COMMAND (output to LOGS/LOGNAME), report its status.
check() {
    local name=$1 log=$LOGS/$2
    shift 2
    "$@" >"$log" 2>&1
    report "$name" $? "$log"
}

# --check of every config, as the units' ExecStartPre does.
check_configs() {
    local d
    for d in "${DAEMONS[@]}"; do
        check "$1: dk-$d --check passes" "$1-check-$d.log" \
            in_root "dk-$d" --check --config "/etc/deploykit/$d.toml"
    done
}

# 1. The tools, from the root's own mirror. python3-apt: Ansible's apt module needs it.
start=$SECONDS
check "apt-get update" apt-update.log in_root apt-get update
check "install puppet, ansible-core and python3-apt" install.log \
    in_root apt-get install -y --no-install-recommends puppet ansible-core python3-apt
echo "# puppet + ansible-core install: $((SECONDS - start)) s"

# 2. contrib/ and the fixtures the test values point at: a clone with a remote (written
# as files: no git in the root), a passcode file (a dummy: this is a test) and a key pair.
rm -rf --one-file-system "$ROOT/tmp/contrib" "$ROOT/tmp/dk-cm-puppet"
cp -a "$CONTRIB/." "$ROOT/tmp/contrib"
repo=$ROOT/srv/git/site
mkdir -p "$repo/objects/info" "$repo/objects/pack" "$repo/refs/heads" "$repo/refs/tags"
printf 'ref: refs/heads/main\n' >"$repo/HEAD"
printf '[core]\n\trepositoryformatversion = 0\n\tbare = true\n[remote "origin"]\n\turl = https://git.example.com/site.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n' >"$repo/config"
mkdir -p "$ROOT/etc/deploykit"
(umask 077 && printf 'test-fixture-not-a-secret\n' >"$ROOT/etc/deploykit/passcode")
rm -f "$ROOT/tmp/dk-cm-ops.key"
ops_key=$(in_root dk-deploy keygen --out /tmp/dk-cm-ops.key 2>"$LOGS/keygen.log" | head -n 1)
[[ $ops_key =~ ^ed25519:[A-Za-z0-9+/]+=*$ ]]
report "dk-deploy keygen makes the test key" $? "$LOGS/keygen.log"

# 3. Puppet: apply, --check, values, apply again (nothing may change).
puppet_apply() {
    in_root FACTER_dk_manage_packages="$MANAGE_PACKAGES" FACTER_dk_ops_key="$ops_key" \
        puppet apply --detailed-exitcodes --color=false --modulepath /tmp/contrib/puppet \
        /tmp/contrib/test/puppet-test.pp
}
start=$SECONDS
puppet_apply >"$LOGS/puppet-1.log" 2>&1
rc=$?
echo "# puppet apply 1: $((SECONDS - start)) s (exit $rc)"
[ "$rc" -eq 0 ] || [ "$rc" -eq 2 ]
report "puppet apply succeeds (exit 0 or 2)" $? "$LOGS/puppet-1.log"
! grep -q 'Package\[' "$LOGS/puppet-1.log"
report "puppet apply changes no package" $? "$LOGS/puppet-1.log"
check_configs puppet
check "puppet: configs hold the values, quote and backslash included" puppet-values.log \
    in_root python3 /tmp/contrib/test/check_toml.py /etc/deploykit
mkdir -p "$ROOT/tmp/dk-cm-puppet"
cp -p "$ROOT"/etc/deploykit/*.toml "$ROOT/tmp/dk-cm-puppet/"
start=$SECONDS
puppet_apply >"$LOGS/puppet-2.log" 2>&1
rc=$?
echo "# puppet apply 2: $((SECONDS - start)) s (exit $rc)"
[ "$rc" -eq 0 ]
report "second puppet apply changes nothing (exit 0)" $? "$LOGS/puppet-2.log"

# 4. Ansible: the same values over Puppet's files; then a second run must change nothing.
ansible_run() {
    in_root DK_CM_MANAGE_PACKAGES="$MANAGE_PACKAGES" DK_OPS_KEY="$ops_key" \
        ANSIBLE_ROLES_PATH=/tmp/contrib/ansible ANSIBLE_NOCOLOR=1 ANSIBLE_LOCALHOST_WARNING=false \
        ansible-playbook -c local -i localhost, /tmp/contrib/test/ansible-test.yml
}
recap_ok() { # LOG CHANGED: the play recap says failed=0 and changed=CHANGED (a number or a regex)
    grep -Eq "^localhost +: ok=[0-9]+ +changed=$2 +unreachable=0 +failed=0 " "$1"
}
start=$SECONDS
ansible_run >"$LOGS/ansible-1.log" 2>&1
rc=$?
echo "# ansible-playbook 1: $((SECONDS - start)) s (exit $rc)"
[ "$rc" -eq 0 ] && recap_ok "$LOGS/ansible-1.log" '[0-9]+'
report "ansible-playbook succeeds" $? "$LOGS/ansible-1.log"
! grep -A 2 '^TASK \[deploykit : Install the deploykit packages' "$LOGS/ansible-1.log" | grep -q '^changed:'
report "ansible-playbook changes no package" $? "$LOGS/ansible-1.log"
check_configs ansible
check "ansible: configs hold the values, quote and backslash included" ansible-values.log \
    in_root python3 /tmp/contrib/test/check_toml.py /etc/deploykit
check "ansible and puppet configs parse to the same data" same-data.log \
    in_root python3 /tmp/contrib/test/check_toml.py /etc/deploykit /tmp/dk-cm-puppet
start=$SECONDS
ansible_run >"$LOGS/ansible-2.log" 2>&1
rc=$?
echo "# ansible-playbook 2: $((SECONDS - start)) s (exit $rc)"
[ "$rc" -eq 0 ] && recap_ok "$LOGS/ansible-2.log" 0
report "second ansible-playbook run reports changed=0" $? "$LOGS/ansible-2.log"
