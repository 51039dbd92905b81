#!/usr/bin/env bash
# The install suite: deploykit's packages on a clean Debian 12, as a new server gets them.
#
#   scripts/install-suite.sh [--no-package] [--keep] [--help]
#   scripts/install-suite.sh --root-only
#
# 1. scripts/package builds every artifact (the .debs, the wheel, the jars) into
#    .dk-test/install/dist (--no-package reuses what is there).
# 2. debootstrap --variant=minbase bookworm makes a clean root from the Debian mirror this
#    machine's apt uses (no package of the build in it; in the background, with the tools
#    the checks use, while step 1 compiles), and `apt-get install` puts every .deb in it,
#    Depends resolved by apt from that mirror, inside a chroot.
# 3. Checks, one TAP line each: every binary runs --version and --help; every shipped
#    config passes --check; the conffiles, system users and completions are there;
#    `systemd-analyze verify` passes on the installed units and `systemd-analyze security`
#    rates the hub units and dk-apt-watch at most 2.5; `man dk-fetch` renders; libdeploykit
#    loads by its soname and pkg-config finds it; the jar's native library loads in the
#    root's JVM; the wheel installs into the root's own Python without cargo and
#    `import deploykit` works.
# 4. The dogfood: deploykit delivers deploykit. In the root, dk-broker, dk-reprepro and
#    dk-apt-watch run from the installed packages; a new build of deploykit-server (the
#    same binaries, Debian revision 2) is dropped into dk-reprepro's incoming directory;
#    reprepro includes it and a package message goes out; dk-apt-watch runs `apt-get
#    update` with that repository in its sources (file:), and `apt-get install
#    deploykit-server` upgrades the root to our own new package from it.
# 5. contrib/test-in-root.sh: the Puppet module and the Ansible role applied in the root
#    (`puppet apply`, `ansible-playbook -c local`, from Debian), the configs they write
#    pass --check, a second run changes nothing.
#
# --root-only makes the root of step 2 and exits, leaving it (with .dk-test/install/
# root.ready) for the next run, which then uses it instead of making its own: scripts/test
# makes it in the background while other suites run.
#
# If debootstrap cannot reach the mirror, the suite fails loudly. Needs root (chroot,
# mount). The last line is `N passed, N failed`. Work tree: .dk-test/install (gitignored);
# the root is removed on exit unless --keep.
set -uo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$DK_ROOT"

PACKAGE=1
KEEP=0
ROOT_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --no-package) PACKAGE=0 ;;
        --root-only) ROOT_ONLY=1 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) printf 'install-suite.sh: unknown argument %s (try --help)\n' "$arg" >&2; exit 64 ;;
    esac
done

WORK="$DK_ROOT/.dk-test/install"
DIST="$WORK/dist"
ROOT="$WORK/root"
READY="$WORK/root.ready"
LOGS="$WORK/logs"
mkdir -p "$WORK" "$LOGS"

# shellcheck source=scripts/lib/tap.sh
. "$DK_ROOT/scripts/lib/tap.sh"

dk_need_root "the install suite (debootstrap, chroot)"

PIDS=()
cleanup() {
    local p m
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    # Processes started inside the root (dk-* daemons) are killed before it is unmounted.
    if [ -d "$ROOT/proc" ]; then
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ] && kill -9 "${p#/proc/}" 2>/dev/null
        done
    fi
    # make_root mounted it (in the background).
    umount -l "$ROOT/proc" 2>/dev/null || true
    if [ "$KEEP" = 0 ] && [ -d "$ROOT" ]; then
        rm -rf --one-file-system "$ROOT"
    fi
    tap_cleanup
}
trap cleanup EXIT

# in_root CMD...: runs CMD inside the root with a plain environment (no host PATH, no
# CARGO_*), logging to $LOGS/chroot.log.
in_root() {
    chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}

# ------------------------------------------------------------------ 2. a clean Debian root (in the background)

# The mirror apt already uses here (deb822 or one-line sources), else Debian's own.
mirror() {
    local uri
    uri=$(awk '/^URIs:/ && !/security/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null)
    [ -z "$uri" ] && uri=$(awk '$1 == "deb" && !/security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1)
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

# make_root: debootstrap, then the Debian packages the checks use (not ours and not their
# Depends: apt resolves those below). Network-bound, so it runs while scripts/package
# compiles. One line per step in $LOGS/root.steps: "STEP RC SECONDS".
make_root() {
    local t0 rc
    t0=$(dk_now)
    debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$LOGS/debootstrap.log" 2>&1
    rc=$?
    echo "debootstrap $rc $(dk_elapsed "$t0")" >>"$LOGS/root.steps"
    [ $rc = 0 ] || return
    mount -t proc proc "$ROOT/proc"
    # The same suites as this machine (bookworm, -updates, -security), so versions agree.
    if ls /etc/apt/sources.list.d/*.sources >/dev/null 2>&1; then
        cp /etc/apt/sources.list.d/debian.sources "$ROOT/etc/apt/sources.list.d/" 2>/dev/null && rm -f "$ROOT/etc/apt/sources.list"
    fi
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
    # Nothing may start services in the root (policy-rc.d, as Debian's build chroots do).
    printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d" && chmod 755 "$ROOT/usr/sbin/policy-rc.d"
    t0=$(dk_now)
    in_root apt-get update >"$LOGS/apt.log" 2>&1
    rc=$?
    echo "apt-update $rc $(dk_elapsed "$t0")" >>"$LOGS/root.steps"
    [ $rc = 0 ] || return
    # What the checks use: systemd (systemd-analyze), man-db, pkg-config, python3-venv,
    # a JRE (deploykit-java's Depends, and slow to unpack), reprepro (the hub's Recommends),
    # and what contrib/test-in-root.sh installs (puppet, ansible-core, python3-apt).
    t0=$(dk_now)
    in_root apt-get install -y -q systemd man-db pkg-config python3-venv default-jre-headless reprepro \
        >>"$LOGS/apt.log" 2>&1 \
        && in_root apt-get install -y -q --no-install-recommends puppet ansible-core python3-apt >>"$LOGS/apt.log" 2>&1
    rc=$?
    echo "apt-tools $rc $(dk_elapsed "$t0")" >>"$LOGS/root.steps"
}

# step_rc STEP: the exit status make_root recorded for STEP (1 if it never got there).
step_rc() { awk -v s="$1" '$1 == s { rc = $2 } END { print (rc == "" ? 1 : rc) }' "$LOGS/root.steps" 2>/dev/null || echo 1; }
step_secs() { awk -v s="$1" '$1 == s { t = $3 } END { print t }' "$LOGS/root.steps" 2>/dev/null; }

# fresh_root: no root, no logs of an earlier one.
fresh_root() {
    rm -f "$READY" "$LOGS"/*.log
    if [ -e "$ROOT" ]; then
        umount -l "$ROOT/proc" 2>/dev/null
        rm -rf --one-file-system "$ROOT"
    fi
    : >"$LOGS/root.steps"
}

MIRROR=$(mirror)
if [ "$ROOT_ONLY" = 1 ]; then
    trap - EXIT
    fresh_root
    make_root
    for step in debootstrap apt-update apt-tools; do
        [ "$(step_rc "$step")" = 0 ] || { dk_warn "install-suite: $step failed (logs: $LOGS)"; exit 1; }
    done
    : >"$READY"
    dk_log "install-suite: root ready in $ROOT ($(tr '\n' ';' <"$LOGS/root.steps"))"
    exit 0
fi
ROOT_PID=""
if [ -f "$READY" ] && [ -d "$ROOT/proc/self" ]; then
    # Made by --root-only (scripts/test, in the background): used once, then removed.
    rm -f "$READY"
    dk_log "install-suite: using the root made by --root-only ($(tr '\n' ';' <"$LOGS/root.steps"))"
    find "$LOGS" -name '*.log' ! -name debootstrap.log ! -name apt.log -delete
else
    fresh_root
    make_root &
    ROOT_PID=$!
    PIDS+=("$ROOT_PID")
fi

# ------------------------------------------------------------------ 1. packages

if [ "$PACKAGE" = 1 ]; then
    rm -rf "$DIST"
    "$DK_ROOT/scripts/package" --out "$DIST" >"$LOGS/package.log" 2>&1
    rc=$?
    check $rc "scripts/package: the .debs, the wheel and the jars"
    [ $rc = 0 ] || { dk_tail_file "$LOGS/package.log" 40; dk_tail_file "$DK_LOG_DIR/package.log" 40; finish; }
fi
DEBS=()
for name in deploykit-server deploykit-hub deploykit-cli libdeploykit0 libdeploykit-dev deploykit-java; do
    f=$(find "$DIST" -maxdepth 1 -name "${name}_*.deb" | head -n 1)
    [ -n "$f" ]
    check $? "package $name built"
    [ -n "$f" ] && DEBS+=("$f")
done
WHEEL=$(find "$DIST" -maxdepth 1 -name 'deploykit-*.whl' | head -n 1)
[ -n "$WHEEL" ]
check $? "wheel built (${WHEEL##*/})"
sizes=$(cd "$DIST" && find . -maxdepth 1 -type f \( -name '*.deb' -o -name '*.whl' -o -name '*.jar' \) -printf '%f=%s\n' | LC_ALL=C sort | tr '\n' ' ')
dk_log "install-suite: artifacts (bytes): $sizes"

# ------------------------------------------------------------------ 2b. our packages into it

[ -z "$ROOT_PID" ] || wait "$ROOT_PID"
rc=$(step_rc debootstrap)
check "$rc" "debootstrap --variant=minbase bookworm from $MIRROR ($(step_secs debootstrap)s)"
if [ "$rc" != 0 ]; then
    dk_tail_file "$LOGS/debootstrap.log" 30
    dk_warn "install-suite: debootstrap could not make a root from $MIRROR: the install test cannot run"
    finish
fi
check "$(step_rc apt-update)" "apt-get update in the root"
rc=$(step_rc apt-tools)
check "$rc" "apt-get install of the checks' tools in the root ($(step_secs apt-tools)s)"
[ "$rc" = 0 ] || { dk_tail_file "$LOGS/apt.log" 40; finish; }

mkdir -p "$ROOT/tmp/dist"
cp "$DIST"/*.deb "$DIST"/*.whl "$DIST"/*.jar "$ROOT/tmp/dist/" 2>/dev/null
t0=$(dk_now)
# Our packages by path; apt resolves what they depend on (libssl3, procps, …) from the mirror.
in_root apt-get install -y -q $(printf '/tmp/dist/%s ' "${DEBS[@]##*/}") >>"$LOGS/apt.log" 2>&1
rc=$?
check $rc "apt-get install ./deploykit-*.deb ./libdeploykit*.deb in the root ($(dk_elapsed "$t0")s)"
[ $rc = 0 ] || { dk_tail_file "$LOGS/apt.log" 40; finish; }

# ------------------------------------------------------------------ 3. what was installed

TOOLS=(dk-agent dk-fetch dk-apt-watch dk-web dk-webhook dk-jenkins dk-reprepro dk-keepalive dk-broker
       dk-deploy dk-stomp dk-notify dk-demo)
VERSION=$(awk -F'"' '/^version *=/ { print $2; exit }' "$DK_ROOT/Cargo.toml")
for tool in "${TOOLS[@]}"; do
    out=$(in_root "$tool" --version 2>&1)
    [ "$out" = "$tool $VERSION" ]
    check $? "$tool --version says '$tool $VERSION' (got: ${out:0:60})"
    in_root "$tool" --help >"$LOGS/help-$tool.log" 2>&1 && grep -q 'Usage:' "$LOGS/help-$tool.log"
    check $? "$tool --help"
done

# Every shipped config passes --check as installed (only the broker URL would need setting).
for conf in "$ROOT"/etc/deploykit/*.toml; do
    name=$(basename "$conf" .toml)
    in_root "dk-$name" --check --config "/etc/deploykit/$name.toml" >"$LOGS/check-$name.log" 2>&1
    rc=$?
    check $rc "dk-$name --check --config /etc/deploykit/$name.toml"
    [ $rc = 0 ] || dk_tail_file "$LOGS/check-$name.log" 10
done
# And as each hub daemon's own user, with only what its unit gives it: its StateDirectory
# (made here the way systemd makes it) and its credentials (dk-web's key). Under
# DynamicUser= the old dk-webhook unit could not write its spool and exited 3.
as_unit() {
    local user="$1" state="$2"
    shift 2
    if [ -n "$state" ]; then
        # As systemd does for StateDirectory=: made if missing, and everything in it given
        # to the service's user (a --check run as root may have made files there).
        in_root install -d -m 0750 -o "$user" -g "$user" "/var/lib/deploykit/$state"
        in_root chown -R "$user:$user" "/var/lib/deploykit/$state"
    fi
    in_root setpriv --reuid "$user" --regid "$user" --init-groups "$@"
}
in_root install -d -m 0500 -o dk-web -g dk-web /run/credentials/dk-web.service
in_root install -m 0400 -o dk-web -g dk-web /etc/deploykit/web.key /run/credentials/dk-web.service/web.key
as_unit dk-web web env DK_WEB_KEY_FILE=/run/credentials/dk-web.service/web.key \
    dk-web --check --config /etc/deploykit/web.toml >"$LOGS/unit-check-web.log" 2>&1
check $? "dk-web --check as dk-web, the key from its credentials directory"
as_unit dk-webhook webhook dk-webhook --check --config /etc/deploykit/webhook.toml >"$LOGS/unit-check-webhook.log" 2>&1
check $? "dk-webhook --check as dk-webhook: its spool can be made in its StateDirectory"
for name in jenkins reprepro keepalive; do
    as_unit "dk-$name" "" "dk-$name" --check --config "/etc/deploykit/$name.toml" >"$LOGS/unit-check-$name.log" 2>&1
    check $? "dk-$name --check as dk-$name"
done

n=$(find "$ROOT/etc/deploykit" -maxdepth 1 -name '*.toml' | wc -l)
[ "$n" = 8 ]
check $? "8 configs shipped in /etc/deploykit (found $n)"

for pkg in deploykit-server deploykit-hub; do
    conffiles=$(in_root dpkg-query --control-show "$pkg" conffiles 2>/dev/null | awk '{ print $1 }' | tr '\n' ' ')
    case "$conffiles" in *"/etc/deploykit/"*.toml*) rc=0 ;; *) rc=1 ;; esac
    check $rc "$pkg's configs are conffiles ($conffiles)"
done

for user in dk-web dk-webhook dk-jenkins dk-reprepro dk-keepalive dk-broker; do
    shell=$(in_root getent passwd "$user" | cut -d: -f7)
    [ "$shell" = /usr/sbin/nologin ] || [ "$shell" = /sbin/nologin ]
    check $? "system user $user (sysusers.d), no login shell"
done
key_mode=$(stat -c '%a %U' "$ROOT/etc/deploykit/web.key" 2>/dev/null)
[ "$key_mode" = "600 root" ]
check $? "dk-web's signing key made at install, root-only (got: $key_mode)"
[ -f "$ROOT/var/lib/deploykit/reprepro/conf/distributions" ] && [ -d "$ROOT/var/lib/deploykit/reprepro/incoming/bookworm" ]
check $? "dk-reprepro's repository made at install (tmpfiles.d and conf/distributions)"

for tool in dk-fetch dk-deploy; do
    [ -s "$ROOT/usr/share/bash-completion/completions/$tool" ] && [ -s "$ROOT/usr/share/zsh/vendor-completions/_$tool" ] \
        && [ -s "$ROOT/usr/share/fish/vendor_completions.d/$tool.fish" ]
    check $? "$tool completions for bash, zsh and fish"
done
in_root bash -c '. /usr/share/bash-completion/completions/dk-deploy && complete -p dk-deploy' >/dev/null 2>&1
check $? "the bash completion of dk-deploy loads and registers"

in_root man -P cat dk-fetch >"$LOGS/man-dk-fetch.log" 2>&1 && grep -q 'fetch' "$LOGS/man-dk-fetch.log" \
    && grep -q 'OPTIONS' "$LOGS/man-dk-fetch.log"
check $? "man dk-fetch renders"

units=$(cd "$ROOT/usr/lib/systemd/system" && ls dk-*.service 2>/dev/null | tr '\n' ' ')
[ "$(printf '%s' "$units" | wc -w)" = 9 ]
check $? "9 units installed ($units)"
# shellcheck disable=SC2086 # word splitting of the unit list is wanted
(cd "$ROOT/usr/lib/systemd/system" && chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin \
    systemd-analyze verify $(printf '/usr/lib/systemd/system/%s ' $units)) >"$LOGS/verify.log" 2>&1
rc=$?
check $rc "systemd-analyze verify on the installed units"
[ $rc = 0 ] || dk_tail_file "$LOGS/verify.log" 20
for unit in $units; do
    score=$(in_root systemd-analyze security --offline=true "/usr/lib/systemd/system/$unit" 2>/dev/null \
        | awk '/Overall exposure level/ { print $(NF - 2) }')
    case "$unit" in
        dk-agent.service | dk-fetch.service)
            # Named exposures (see the unit): reported, held to what they are today.
            ceiling=7.0 ;;
        *) ceiling=2.5 ;;
    esac
    awk -v s="$score" -v c="$ceiling" 'BEGIN { exit !(s != "" && s + 0 <= c + 0) }'
    check $? "systemd-analyze security $unit: $score (at most $ceiling)"
    # The unit's own comment states its score; it must stay true.
    grep -q "rates this $score[.]" "$ROOT/usr/lib/systemd/system/$unit"
    check $? "$unit states its exposure ($score) in its sandbox comment"
done

# The C library: by its soname, and through pkg-config.
in_root python3 -c 'import ctypes; ctypes.CDLL("libdeploykit.so.0")' >/dev/null 2>&1 \
    || in_root sh -c 'ldconfig -p | grep -q "libdeploykit\.so\.0"'
check $? "libdeploykit.so.0 is found by the dynamic loader"
pc=$(in_root pkg-config --cflags --libs deploykit 2>&1)
case "$pc" in *-ldeploykit*) true ;; *) false ;; esac
check $? "pkg-config --libs deploykit ($pc)"

# The jar in the root's JVM: the native library extracted privately and loaded.
if in_root sh -c 'command -v java' >/dev/null 2>&1; then
    out=$(in_root java -cp /usr/share/java/deploykit.jar org.deploykit.NativeLibrary 2>&1)
    rc=$?
    check $rc "java -cp /usr/share/java/deploykit.jar org.deploykit.NativeLibrary (${out:0:140})"
    # Extracted privately: under root's cache, in 0700 directories, never /tmp.
    case "$out" in *"extracted to /root/.cache/deploykit/native/"*) rc=0 ;; *) rc=1 ;; esac
    mode=$(stat -c '%a' "$ROOT/root/.cache/deploykit/native" 2>/dev/null)
    [ $rc = 0 ] && [ "$mode" = 700 ]
    check $? "the jar's native library went to a 0700 directory under ~/.cache (mode $mode), not /tmp"
else
    check 1 "deploykit-java pulled in a Java runtime"
fi

# The wheel into the root's own Python (3.11 from Debian), without cargo or a compiler.
in_root sh -c 'command -v cargo || command -v cc || command -v rustc' >/dev/null 2>&1
[ $? != 0 ]
check $? "the root has no cargo, rustc or C compiler"
in_root python3 -m venv /opt/dk-venv >>"$LOGS/wheel.log" 2>&1 \
    && in_root /opt/dk-venv/bin/pip install --no-index --no-deps "/tmp/dist/${WHEEL##*/}" >>"$LOGS/wheel.log" 2>&1
check $? "pip install ${WHEEL##*/} into the root's Python (--no-index)"
out=$(in_root /opt/dk-venv/bin/python -c 'import deploykit, sys; print(deploykit.__version__)' 2>&1)
[ "$out" = "$VERSION" ]
check $? "import deploykit in the root (version: ${out:0:60})"

# ------------------------------------------------------------------ 4. deploykit delivers deploykit

# free_port: a loopback port nothing listens on now.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_for_line FILE REGEX SECONDS: until a line of FILE matches (the daemons' own log lines
# are the events awaited here), bounded.
wait_for_line() {
    local file="$1" re="$2" deadline=$((SECONDS + $3))
    while [ $SECONDS -lt $deadline ]; do
        grep -Eq -- "$re" "$file" 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}

dogfood() {
    local dog="$ROOT/tmp/dogfood" port newdeb
    mkdir -p "$dog"
    port=$(free_port)
    # The bus: dk-broker from deploykit-hub, as its own system user.
    in_root setpriv --reuid dk-broker --regid dk-broker --init-groups \
        dk-broker --listen "127.0.0.1:$port" >"$LOGS/dogfood-broker.log" 2>&1 &
    PIDS+=($!)
    wait_for_line "$LOGS/dogfood-broker.log" 'listening on' 20
    check $? "dogfood: dk-broker (deploykit-hub) listening on 127.0.0.1:$port"

    # dk-reprepro with the shipped config, only the broker URL set, as dk-reprepro.
    sed "s#^url = .*#url = \"stomp://127.0.0.1:$port\"#" "$ROOT/etc/deploykit/reprepro.toml" >"$dog/reprepro.toml"
    in_root setpriv --reuid dk-reprepro --regid dk-reprepro --init-groups \
        dk-reprepro --config /tmp/dogfood/reprepro.toml -v >"$LOGS/dogfood-reprepro.log" 2>&1 &
    PIDS+=($!)
    # dk-apt-watch with the shipped config, the broker URL set and our packages watched.
    {
        sed "s#^url = .*#url = \"stomp://127.0.0.1:$port\"#" "$ROOT/etc/deploykit/apt-watch.toml" \
            | sed '/^\[broker\]/i packages = ["deploykit-*"]\nquiet = "1s"\nmin_interval = "1s"\n'
    } >"$dog/apt-watch.toml"
    in_root dk-apt-watch --config /tmp/dogfood/apt-watch.toml -v >"$LOGS/dogfood-apt-watch.log" 2>&1 &
    PIDS+=($!)
    wait_for_line "$LOGS/dogfood-reprepro.log" 'subscribed|connected|ready|watching' 30 \
        && wait_for_line "$LOGS/dogfood-apt-watch.log" 'subscribed|connected|ready' 30
    check $? "dogfood: dk-reprepro and dk-apt-watch (deploykit-server) connected"

    # This server takes packages from that repository (unsigned: no SignWith yet).
    printf 'deb [trusted=yes] file:/var/lib/deploykit/reprepro bookworm main\n' \
        >"$ROOT/etc/apt/sources.list.d/deploykit.list"

    # A new build of deploykit-server: the same binaries, the next Debian revision.
    rm -rf "$WORK/dogfood" && mkdir -p "$WORK/dogfood"
    cargo deb --no-build --no-strip -p deploykit-tools --variant server --deb-revision 2 \
        --output "$WORK/dogfood" >"$LOGS/dogfood-cargo-deb.log" 2>&1
    newdeb=$(find "$WORK/dogfood" -name 'deploykit-server_*-2_*.deb' | head -n 1)
    [ -n "$newdeb" ]
    check $? "dogfood: deploykit-server revision 2 built (${newdeb##*/})"
    [ -n "$newdeb" ] || return

    # Dropped into dk-reprepro's incoming directory the way an upload lands: written
    # beside it, then renamed in.
    local incoming="$ROOT/var/lib/deploykit/reprepro/incoming/bookworm"
    cp "$newdeb" "$incoming/.${newdeb##*/}.part"
    mv "$incoming/.${newdeb##*/}.part" "$incoming/${newdeb##*/}"
    wait_for_line "$LOGS/dogfood-reprepro.log" 'added to the repository.*deploykit-server_' 60
    check $? "dogfood: reprepro included deploykit-server and dk-reprepro published a package message"
    wait_for_line "$LOGS/dogfood-apt-watch.log" 'watched package changed.*deploykit-server' 60 \
        && wait_for_line "$LOGS/dogfood-apt-watch.log" 'action done' 120
    check $? "dogfood: dk-apt-watch ran apt-get update on that message"
    local cand
    cand=$(in_root apt-cache policy deploykit-server | awk '/Candidate:/ { print $2 }')
    [ "$cand" = "${VERSION}-2" ]
    check $? "dogfood: apt sees deploykit-server ${VERSION}-2 in dk-reprepro's repository (candidate: $cand)"
    in_root apt-get install -y -q deploykit-server >"$LOGS/dogfood-install.log" 2>&1
    local got
    got=$(in_root dpkg-query -W -f '${Version}' deploykit-server)
    [ "$got" = "${VERSION}-2" ]
    check $? "dogfood: apt-get install deploykit-server upgraded it from our repository (now $got)"
    [ "$got" = "${VERSION}-2" ] || dk_tail_file "$LOGS/dogfood-install.log" 20
    # The root goes back to Debian's sources only.
    rm -f "$ROOT/etc/apt/sources.list.d/deploykit.list"
}

# ------------------------------------------------------------------ 5. Puppet and Ansible

# contrib/test-in-root.sh applies the Puppet module and the Ansible role in the root (after
# the dogfood: they rewrite /etc/deploykit) and prints TAP lines; they are counted here.
confmgmt() {
    local out="$LOGS/confmgmt.tap" rc ok bad
    DK_CM_LOG_DIR="$LOGS/confmgmt" "$DK_ROOT/contrib/test-in-root.sh" "$ROOT" >"$out" 2>&1
    rc=$?
    cat "$out"
    ok=$(grep -c '^ok - ' "$out")
    bad=$(grep -c '^not ok - ' "$out")
    PASSED=$((PASSED + ok))
    FAILED=$((FAILED + bad))
    if [ "$ok" = 0 ] || { [ "$rc" != 0 ] && [ "$bad" = 0 ]; }; then
        check 1 "contrib/test-in-root.sh ran its checks (exit $rc)"
    fi
}

dogfood
confmgmt

finish
