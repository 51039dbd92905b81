#!/usr/bin/env bash
# The JVM binding suite (ffi-jvm): builds libdeploykit_jni and the jars with
# ffi-jvm/build-jar.sh (the org.deploykit classes with the native library and its
# SHA-256 inside, /native/linux-x86_64/libdeploykit_jni.so{,.sha256}; sources;
# javadoc), and runs the JUnit 5 tests (Debian's junit5 console launcher) under
# -Xcheck:jni, loading the library from the jar (extracted to a private cache
# directory, XDG_CACHE_HOME=.dk-test/jvm/xdg-cache), against the embedded broker
# (dk-broker, with a users file) and, when DK_TEST_RABBITMQ is set, against
# RabbitMQ too.
#
#   scripts/jvm-suite.sh [--help]
#
# Every check prints `ok - NAME` or `not ok - NAME`; each JUnit test counts as
# one check, and so does each run's -Xcheck:jni verdict (no JNI warnings). The
# last line is `N passed, N failed`; the exit status is non-zero on any failure.
# Logs and build products: .dk-test/jvm/ (gitignored). The Jenkins plugin
# (ffi-jvm/jenkins-plugin) is not built here: it needs Jenkins's Maven repository.
#
# Environment: DK_TEST_RABBITMQ (e.g. stomp://guest:guest@127.0.0.1:61613),
# DK_REQUIRE_BROKERS=1 (a missing DK_TEST_RABBITMQ fails), CARGO_TARGET_DIR,
# DK_JVM_TEST_TIMEOUT (s per JUnit run, default 300).
# Installs when missing (apt-get, root): openjdk-17-jdk-headless, junit5.
# No `set -e`: every step is checked explicitly and counted.
set -uo pipefail
# shellcheck source=scripts/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$DK_ROOT"

for arg in "$@"; do
    case "$arg" in
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) printf 'jvm-suite.sh: unknown argument %s (try --help)\n' "$arg" >&2; exit 64 ;;
    esac
done

TARGET_DIR="${CARGO_TARGET_DIR:-$DK_ROOT/target}"
WORK="$DK_ROOT/.dk-test/jvm"
LOGS="$WORK/logs"
TEST_TIMEOUT="${DK_JVM_TEST_TIMEOUT:-300}"
JUNIT_JAR=/usr/share/java/junit-platform-console-standalone.jar
CLASSIFIER=linux-x86_64
rm -rf "$WORK"
mkdir -p "$WORK/test-classes" "$WORK/check" "$LOGS"

# shellcheck source=scripts/lib/tap.sh
. "$DK_ROOT/scripts/lib/tap.sh"

# ------------------------------------------------------------------ tools

"$DK_ROOT/scripts/lib/deps.sh" jvm >>"$LOGS/deps.log" 2>&1 || {
    dk_tail_file "$LOGS/deps.log" 30
    dk_die "jvm-suite: could not install the JDK or JUnit 5 (see $LOGS/deps.log)"
}
for tool in java javac jar javadoc; do
    command -v "$tool" >/dev/null || dk_die "jvm-suite: $tool is missing (Debian: openjdk-17-jdk-headless)"
done
for tool in objdump readelf strip; do
    command -v "$tool" >/dev/null || dk_die "jvm-suite: $tool is missing (Debian: binutils)"
done
[ -f "$JUNIT_JAR" ] || dk_die "jvm-suite: $JUNIT_JAR is missing (Debian: junit5)"
case "$(uname -m)" in
    x86_64) ;;
    *) dk_die "jvm-suite: only linux-x86_64 is packaged so far (this is $(uname -m))" ;;
esac

# ------------------------------------------------------------------ build

dk_log "jvm-suite: building libdeploykit_jni and dk-broker"
# dk-broker: the same feature resolution as `cargo test --workspace`, so a run after it links instead of
# recompiling. Then the library alone (`-p`, in build-jar.sh): a workspace build unifies core's features
# across members and would link the tools' (git transports, OpenSSL, axum, SQLite) into it; alone it gets
# only its own.
build_ok=0
cargo build --workspace --lib --bins --tests >"$LOGS/cargo-build.log" 2>&1 || build_ok=1
[ "$build_ok" = 0 ] || dk_tail_file "$LOGS/cargo-build.log" 40
check "$build_ok" "cargo build of the workspace (dk-broker)"
[ "$build_ok" = 0 ] || finish

mapfile -t TEST_SOURCES < <(find ffi-jvm/java/src/test/java -name '*.java' | sort)
# The jars, as a release would make them (debug library: the tests want its symbols).
ffi-jvm/build-jar.sh --out "$WORK" >"$LOGS/build-jar.log" 2>&1
rc=$?
[ "$rc" = 0 ] || sed 's/^/#   /' "$LOGS/build-jar.log"
check "$rc" "ffi-jvm/build-jar.sh: cargo build -p deploykit-jni, javac -Xlint:all -Werror --release 11, javadoc -Werror, 3 jars"
[ "$rc" = 0 ] || finish

JAR="$WORK/deploykit.jar"
NATIVE="native/$CLASSIFIER/libdeploykit_jni.so"
listing="$(jar --list --file "$JAR" 2>/dev/null)"
(cd "$WORK/check" && jar --extract --file "$JAR" "$NATIVE" "$NATIVE.sha256") 2>>"$LOGS/jar.log"
# Listings are read whole before matching (grep -q in a pipe stops reading at the match,
# and a writer killed by SIGPIPE fails the check under pipefail).
grep -qx "$NATIVE" <<<"$listing" && grep -qx 'org/deploykit/NativeLibrary.class' <<<"$listing" \
    && [ "$(cut -d' ' -f1 "$WORK/check/$NATIVE.sha256")" = "$(sha256sum "$TARGET_DIR/debug/libdeploykit_jni.so" | cut -d' ' -f1)" ] \
    && (cd "$WORK/check/native/$CLASSIFIER" && sha256sum --check --quiet libdeploykit_jni.so.sha256) >>"$LOGS/jar.log" 2>&1
check $? "deploykit.jar holds the classes, $NATIVE and its SHA-256 (matching the built library)"
grep -qx 'org/deploykit/NativeLibrary.java' <<<"$(jar --list --file "$WORK/deploykit-sources.jar" 2>/dev/null)" \
    && grep -qx 'org/deploykit/NativeLibrary.html' <<<"$(jar --list --file "$WORK/deploykit-javadoc.jar" 2>/dev/null)"
check $? "deploykit-sources.jar and deploykit-javadoc.jar hold NativeLibrary's source and page"

exported="$(objdump -T "$TARGET_DIR/debug/libdeploykit_jni.so" | awk '$2 == "g" && $4 == ".text" { print $NF }' | sort)"
[ "$(printf '%s\n' "$exported" | grep -c '^Java_org_deploykit_' || true)" -gt 0 ] \
    && [ "$(printf '%s\n' "$exported" | grep -v '^Java_org_deploykit_' | grep -c . || true)" = 0 ]
check $? "libdeploykit_jni.so exports only Java_org_deploykit_* symbols"

# What the library links: core's bus, messages and blocking facade (no default features), never OpenSSL.
needed="$(readelf -d "$TARGET_DIR/debug/libdeploykit_jni.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
[ -n "$needed" ] && ! printf '%s\n' "$needed" | grep -qE 'libssl|libcrypto|libgit2|libssh2|libsqlite'
check $? "libdeploykit_jni.so needs no libssl/libcrypto (NEEDED: $needed)"
# Size ceiling of the stripped debug library, measured for #13 with core's default features (what a
# workspace build links) and alone (-p deploykit-jni): debug 8502856 -> 7620272 bytes (release:
# 3709184 -> 3417576). The ceiling is the alone size + 25% (headroom for growth; raise it on purpose).
ceiling=9500000
strip -o "$WORK/libdeploykit_jni.stripped.so" "$TARGET_DIR/debug/libdeploykit_jni.so" 2>"$LOGS/strip.log"
size="$(stat -c %s "$WORK/libdeploykit_jni.stripped.so" 2>/dev/null || echo 0)"
[ "$size" -gt 0 ] && [ "$size" -le "$ceiling" ]
check $? "libdeploykit_jni.so stripped is $size bytes, at most $ceiling (debug)"

javac -Xlint:all -Werror -d "$WORK/test-classes" -cp "$JAR:$JUNIT_JAR" "${TEST_SOURCES[@]}" >"$LOGS/javac-test.log" 2>&1
rc=$?
[ "$rc" = 0 ] || sed 's/^/#   /' "$LOGS/javac-test.log"
check "$rc" "javac: the JUnit tests (${#TEST_SOURCES[@]} sources)"
[ "$rc" = 0 ] || finish

# ------------------------------------------------------------------ brokers

start_dk_broker "$TARGET_DIR/debug/dk-broker" "$WORK" "$LOGS"
port="$BROKER_PORT"

TARGETS=("embedded=stomp://guest:guest@127.0.0.1:$port")
if [ -n "${DK_TEST_RABBITMQ:-}" ]; then
    TARGETS+=("rabbitmq=$DK_TEST_RABBITMQ")
elif [ "${DK_REQUIRE_BROKERS:-0}" = 1 ]; then
    check 1 "DK_TEST_RABBITMQ is set (DK_REQUIRE_BROKERS=1)"
else
    dk_log "jvm-suite: DK_TEST_RABBITMQ not set: embedded broker only"
fi

# ------------------------------------------------------------------ run

for target in "${TARGETS[@]}"; do
    label="${target%%=*}"
    url="${target#*=}"
    out="$LOGS/junit-$label.log"
    dk_log "jvm-suite: JUnit against $label"
    rc=0
    # java.library.path points nowhere useful: the library must come out of the jar, into a fresh
    # private cache (not ~/.cache; JENKINS_HOME unset so the cache rule applies).
    rm -rf "$WORK/xdg-cache"
    # DK_JVM_BROKER_BIN: the notifier's restart test runs a dk-broker of its own (once, with
    # the embedded target).
    env -u JENKINS_HOME XDG_CACHE_HOME="$WORK/xdg-cache" DK_JVM_BROKER_URL="$url" DK_JVM_TARGET="$label" \
        DK_JVM_BROKER_BIN="$TARGET_DIR/debug/dk-broker" timeout --kill-after=10 "$TEST_TIMEOUT" \
        java -Xcheck:jni -Djava.library.path="$WORK/no-such-dir" -Ddeploykit.expectLoadedFrom=jar: \
        -jar "$JUNIT_JAR" --class-path "$JAR:$WORK/test-classes" --scan-class-path "$WORK/test-classes" \
        --disable-banner --disable-ansi-colors --details=tree >"$out" 2>&1 || rc=$?
    # One check per test, from the tree (✔ / ✘ after the method name).
    while IFS= read -r line; do
        name="$(printf '%s' "$line" | sed -E 's/^[^a-zA-Z]*//; s/\([^)]*\).*//')"
        case "$line" in
            *"✔"*) check 0 "[$label] $name" ;;
            *"↷"*) check 0 "[$label] $name # SKIP $(printf '%s' "$line" | sed 's/.*↷ *//')" ;;
            *) check 1 "[$label] $name"; grep -A 3 -F "methodName = '$name'" "$out" | sed 's/^/#   /' ;;
        esac
    done < <(grep -E '[a-zA-Z0-9_]+\([^)]*\) .*(✔|✘|↷)' "$out")
    ok="$(sed -n 's/^\[ *\([0-9]*\) tests successful *\]$/\1/p' "$out")"
    bad="$(sed -n 's/^\[ *\([0-9]*\) tests failed *\]$/\1/p' "$out")"
    if [ -z "$ok" ] || { [ "$rc" != 0 ] && [ "${bad:-0}" = 0 ]; }; then
        check 1 "[$label] JUnit run exited $rc without a test summary (crash or timeout; see ${out#"$DK_ROOT"/})"
        tail -n 20 "$out" | sed 's/^/#   /'
    fi
    grep -q 'leak check:' "$out" && grep 'leak check:' "$out" | sed "s/^/# [$label] /"
    if grep -qE 'WARNING in native method|JNI local refs|FATAL ERROR in native method' "$out"; then
        check 1 "[$label] -Xcheck:jni: no JNI warnings (see ${out#"$DK_ROOT"/})"
        grep -E -A 3 'WARNING in native method|JNI local refs|FATAL ERROR' "$out" | head -n 20 | sed 's/^/#   /'
    else
        check 0 "[$label] -Xcheck:jni: no JNI warnings"
    fi
done

finish
