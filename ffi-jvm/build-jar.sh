#!/usr/bin/env bash
# Builds the JVM binding's jars: the org.deploykit classes with the native
# library inside, the sources and the javadoc.
#
#   ffi-jvm/build-jar.sh [--release] [--out DIR] [--no-build]
#   ffi-jvm/build-jar.sh --help
#
#   --release   cargo's release profile, library stripped of debug info (what
#               ships); default: the debug build, unstripped (what the tests use)
#   --out DIR   where the jars go (default: $CARGO_TARGET_DIR/jvm, or target/jvm)
#   --no-build  use the libdeploykit_jni.so the last cargo build of that profile
#               left instead of running `cargo build -p deploykit-jni`
#
# Makes, in DIR:
#   deploykit.jar          classes (javac --release 11 -Xlint:all -Werror) and
#                          native/linux-x86_64/libdeploykit_jni.so with its
#                          SHA-256 in native/linux-x86_64/libdeploykit_jni.so.sha256
#                          (NativeLibrary checks the library against it before loading)
#   deploykit-sources.jar  the Java sources
#   deploykit-javadoc.jar  the API documentation (javadoc -Werror, doclint on all
#                          but missing @param/@return: one-line docs are the rule)
# Only linux-x86_64 can be built here; other platforms' libraries go to
# native/<os>-<arch>/ (see ffi-jvm/README.md).
# Builds the library alone (-p deploykit-jni) so it gets only its own core
# features (no OpenSSL, git or HTTP). CARGO_TARGET_DIR is honoured.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CLASSIFIER=linux-x86_64
LIBNAME=libdeploykit_jni.so

die() { printf 'build-jar.sh: %s\n' "$*" >&2; exit 1; }
usage_error() { printf 'build-jar.sh: %s (try --help)\n' "$*" >&2; exit 64; }

PROFILE=debug
OUT=
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --release) PROFILE=release ;;
        --debug) PROFILE=debug ;;
        --out) [ $# -ge 2 ] && [ -n "$2" ] || usage_error "--out needs a directory"; OUT="$2"; shift ;;
        --out=*) OUT="${1#--out=}" ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) usage_error "unknown argument $1" ;;
    esac
    shift
done
[ -n "$OUT" ] || OUT="$TARGET_DIR/jvm"
[ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || die "only linux-x86_64 is packaged so far (this is $(uname -s)-$(uname -m))"
for tool in javac jar javadoc sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing (Debian: openjdk-17-jdk-headless, coreutils)"
done

if [ "$BUILD" = 1 ]; then
    if [ "$PROFILE" = release ]; then
        (cd "$ROOT" && cargo build --release -p deploykit-jni)
    else
        (cd "$ROOT" && cargo build -p deploykit-jni)
    fi
fi
LIB="$TARGET_DIR/$PROFILE/$LIBNAME"
[ -f "$LIB" ] || die "$LIB is missing (build first, or drop --no-build)"

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "$OUT/.build-jar.XXXXXX")"
trap 'rm -rf -- "$WORK"' EXIT
mkdir -p "$WORK/classes" "$WORK/res/native/$CLASSIFIER" "$WORK/apidocs"

SRC="$HERE/java/src/main/java"
mapfile -t SOURCES < <(find "$SRC" -name '*.java' | LC_ALL=C sort)
[ "${#SOURCES[@]}" -gt 0 ] || die "no Java sources under $SRC"
javac -Xlint:all -Werror --release 11 -encoding UTF-8 -d "$WORK/classes" "${SOURCES[@]}"

NATIVE="$WORK/res/native/$CLASSIFIER/$LIBNAME"
if [ "$PROFILE" = release ]; then
    # Debug info out, the JNI exports (dynamic symbols) stay.
    strip --strip-debug -o "$NATIVE" "$LIB"
else
    cp -f -- "$LIB" "$NATIVE"
fi
(cd "$(dirname "$NATIVE")" && sha256sum -- "$LIBNAME" >"$LIBNAME.sha256")

VERSION="$(sed -n 's/^version = "\([^"]*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n 1)"
printf 'Implementation-Title: deploykit\nImplementation-Version: %s\nAutomatic-Module-Name: org.deploykit\n' "$VERSION" >"$WORK/MANIFEST.MF"

javadoc -quiet -Xdoclint:all,-missing -Werror --release 11 -encoding UTF-8 -d "$WORK/apidocs" \
    -sourcepath "$SRC" -subpackages org.deploykit -windowtitle "deploykit $VERSION" >"$WORK/javadoc.log" 2>&1 \
    || { cat "$WORK/javadoc.log" >&2; die "javadoc failed"; }

# Each jar is written next to its final name, then renamed over it.
jar --create --file "$WORK/deploykit.jar" --manifest "$WORK/MANIFEST.MF" -C "$WORK/classes" . -C "$WORK/res" native
jar --create --file "$WORK/deploykit-sources.jar" -C "$SRC" .
jar --create --file "$WORK/deploykit-javadoc.jar" -C "$WORK/apidocs" .
for j in deploykit.jar deploykit-sources.jar deploykit-javadoc.jar; do
    mv -f -- "$WORK/$j" "$OUT/$j"
done

for j in deploykit.jar deploykit-sources.jar deploykit-javadoc.jar; do
    printf 'build-jar.sh: %s (%s bytes)\n' "$OUT/$j" "$(stat -c %s "$OUT/$j")"
done
printf 'build-jar.sh: %s (%s, sha256 %s)\n' "native/$CLASSIFIER/$LIBNAME" "$PROFILE" "$(cut -d' ' -f1 "$NATIVE.sha256")"
