#!/usr/bin/env bash
# Builds libdeploykit and installs it with its header and pkg-config file.
#
#   ffi-c/build.sh [--release|--debug] [--prefix DIR] [--no-build]
#   ffi-c/build.sh --header      regenerate include/deploykit.h (pinned cbindgen)
#   ffi-c/build.sh --help
#
# Installs into DIR (default: ffi-c/dist):
#   DIR/lib/libdeploykit.so.X.Y.Z, its soname link (libdeploykit.so.0.MINOR
#   before 1.0) and libdeploykit.so; DIR/lib/libdeploykit.a;
#   DIR/include/deploykit.h; DIR/lib/pkgconfig/deploykit.pc.
# Then: PKG_CONFIG_PATH=DIR/lib/pkgconfig pkg-config --cflags --libs deploykit
#
# The crate's library is named deploykit_c (core's rlib is `deploykit` in the
# same target directory); this script installs it under the public names.
# --no-build installs what the last cargo build of that profile left (used by
# scripts/c-suite.sh, which builds the whole workspace itself).
# CARGO_TARGET_DIR is honoured.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# cbindgen version the committed header is generated with (scripts/c-suite.sh checks it).
CBINDGEN_VERSION=0.29.4

PROFILE=debug
PREFIX="$HERE/dist"
BUILD=1
HEADER_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --release) PROFILE=release ;;
        --debug) PROFILE=debug ;;
        --prefix) [ $# -ge 2 ] || { echo "build.sh: --prefix needs a directory" >&2; exit 64; }; PREFIX="$2"; shift ;;
        --prefix=*) PREFIX="${1#--prefix=}" ;;
        --no-build) BUILD=0 ;;
        --header) HEADER_ONLY=1 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (try --help)" >&2; exit 64 ;;
    esac
    shift
done

if [ "$HEADER_ONLY" = 1 ]; then
    if ! command -v cbindgen >/dev/null || [ "$(cbindgen --version)" != "cbindgen $CBINDGEN_VERSION" ]; then
        echo "build.sh: cbindgen $CBINDGEN_VERSION is needed: cargo install cbindgen --locked --version $CBINDGEN_VERSION" >&2
        exit 1
    fi
    cbindgen --quiet --config "$HERE/cbindgen.toml" --crate deploykit-ffi --output "$HERE/include/deploykit.h" "$HERE"
    echo "build.sh: wrote $HERE/include/deploykit.h"
    exit 0
fi

if [ "$BUILD" = 1 ]; then
    if [ "$PROFILE" = release ]; then
        (cd "$ROOT" && cargo build --release -p deploykit-ffi)
    else
        (cd "$ROOT" && cargo build -p deploykit-ffi)
    fi
fi

OUT="$TARGET_DIR/$PROFILE"
for f in "$OUT/libdeploykit_c.so" "$OUT/libdeploykit_c.a"; do
    [ -f "$f" ] || { echo "build.sh: $f is missing (build first, or drop --no-build)" >&2; exit 1; }
done

HEADER="$HERE/include/deploykit.h"
version_part() { awk -v n="DK_VERSION_$1" '$1 == "#define" && $2 == n { print $3 }' "$HEADER"; }
VERSION="$(version_part MAJOR).$(version_part MINOR).$(version_part PATCH)"
SONAME="$(objdump -p "$OUT/libdeploykit_c.so" | awk '$1 == "SONAME" { print $2 }')"
[ -n "$SONAME" ] || { echo "build.sh: $OUT/libdeploykit_c.so has no SONAME (see ffi-c/build.rs)" >&2; exit 1; }

mkdir -p "$PREFIX/lib/pkgconfig" "$PREFIX/include"
PREFIX="$(cd "$PREFIX" && pwd)"
LIB="$PREFIX/lib"
rm -f "$LIB"/libdeploykit.so* "$LIB/libdeploykit.a"
cp -f "$OUT/libdeploykit_c.so" "$LIB/libdeploykit.so.$VERSION"
[ "$SONAME" = "libdeploykit.so.$VERSION" ] || ln -s "libdeploykit.so.$VERSION" "$LIB/$SONAME"
ln -s "$SONAME" "$LIB/libdeploykit.so"
cp -f "$OUT/libdeploykit_c.a" "$LIB/libdeploykit.a"
cp -f "$HEADER" "$PREFIX/include/deploykit.h"
sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@VERSION@|$VERSION|g" "$HERE/deploykit.pc.in" >"$LIB/pkgconfig/deploykit.pc"
echo "build.sh: installed libdeploykit $VERSION ($PROFILE, soname $SONAME) into $PREFIX"
echo "build.sh: PKG_CONFIG_PATH=$LIB/pkgconfig pkg-config --cflags --libs deploykit"
