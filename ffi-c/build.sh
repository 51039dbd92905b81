#!/usr/bin/env bash
# Builds libdeploykit and installs it with its header and pkg-config file.
#
#   ffi-c/build.sh [--release|--debug] [--prefix DIR] [--libdir DIR]
#                  [--includedir DIR] [--no-build]
#   ffi-c/build.sh --header      regenerate include/deploykit.h (pinned cbindgen)
#   ffi-c/build.sh --help
#
#   --release       cargo's release profile (what packages ship); default --debug
#   --prefix DIR    install prefix (default: ffi-c/dist); written into deploykit.pc
#   --libdir DIR    where the libraries go (default: PREFIX/lib), e.g.
#                   /usr/lib/x86_64-linux-gnu for a Debian package
#   --includedir DIR  where deploykit.h goes (default: PREFIX/include)
#   --no-build      install what the last cargo build of that profile left
#                   (scripts/c-suite.sh builds the workspace itself)
#   DESTDIR=STAGE   (environment) stage the install under STAGE, as autotools'
#                   `make install DESTDIR=...` does: files land in STAGE/LIBDIR,
#                   deploykit.pc still names PREFIX and LIBDIR (both must then
#                   be absolute)
#
# Installs, for version X.Y.Z (soname libdeploykit.so.X, see ffi-c/build.rs):
#   LIBDIR/libdeploykit.so.X.Y.Z, LIBDIR/libdeploykit.so.X -> it,
#   LIBDIR/libdeploykit.so -> libdeploykit.so.X, LIBDIR/libdeploykit.a,
#   INCLUDEDIR/deploykit.h, LIBDIR/pkgconfig/deploykit.pc
# Then: PKG_CONFIG_PATH=LIBDIR/pkgconfig pkg-config --cflags --libs deploykit
# The library is replaced by rename (running programs keep the old one).
#
# The crate's library is named deploykit_c (core's rlib is `deploykit` in the
# same target directory); this script installs it under the public names.
# CARGO_TARGET_DIR is honoured.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
# cbindgen version the committed header is generated with (scripts/c-suite.sh checks it).
CBINDGEN_VERSION=0.29.4

die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }
usage_error() { printf 'build.sh: %s (try --help)\n' "$*" >&2; exit 64; }

PROFILE=debug
PREFIX=
LIBDIR=
INCLUDEDIR=
BUILD=1
HEADER_ONLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --release) PROFILE=release ;;
        --debug) PROFILE=debug ;;
        --prefix|--libdir|--includedir)
            [ $# -ge 2 ] && [ -n "$2" ] || usage_error "$1 needs a directory"
            case "$1" in
                --prefix) PREFIX="$2" ;;
                --libdir) LIBDIR="$2" ;;
                --includedir) INCLUDEDIR="$2" ;;
            esac
            shift ;;
        --prefix=*) PREFIX="${1#--prefix=}" ;;
        --libdir=*) LIBDIR="${1#--libdir=}" ;;
        --includedir=*) INCLUDEDIR="${1#--includedir=}" ;;
        --no-build) BUILD=0 ;;
        --header) HEADER_ONLY=1 ;;
        -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) usage_error "unknown argument $1" ;;
    esac
    shift
done

if [ "$HEADER_ONLY" = 1 ]; then
    if ! command -v cbindgen >/dev/null || [ "$(cbindgen --version)" != "cbindgen $CBINDGEN_VERSION" ]; then
        die "cbindgen $CBINDGEN_VERSION is needed: cargo install cbindgen --locked --version $CBINDGEN_VERSION"
    fi
    cbindgen --quiet --config "$HERE/cbindgen.toml" --crate deploykit-ffi --output "$HERE/include/deploykit.h" "$HERE"
    echo "build.sh: wrote $HERE/include/deploykit.h"
    exit 0
fi

# The directories: absolute (pkg-config needs them so), no whitespace (a .pc
# file cannot quote it). Relative ones are taken from the current directory,
# except under DESTDIR, where a relative path has no meaning.
DESTDIR="${DESTDIR:-}"
[ -n "$PREFIX" ] || PREFIX="$HERE/dist"
absolute() { # absolute NAME PATH
    case "$2" in
        *[[:space:]]*) usage_error "$1 must not contain whitespace: '$2'" ;;
        /*) realpath -m -- "$2" ;;
        *) [ -z "$DESTDIR" ] || usage_error "$1 must be absolute with DESTDIR: '$2'"
           realpath -m -- "$PWD/$2" ;;
    esac
}
PREFIX="$(absolute --prefix "$PREFIX")"
LIBDIR="$(absolute --libdir "${LIBDIR:-$PREFIX/lib}")"
INCLUDEDIR="$(absolute --includedir "${INCLUDEDIR:-$PREFIX/include}")"
case "$DESTDIR" in
    ''|/*) ;;
    *) DESTDIR="$(realpath -m -- "$PWD/$DESTDIR")" ;;
esac
DESTDIR="${DESTDIR%/}"

if [ "$BUILD" = 1 ]; then
    if [ "$PROFILE" = release ]; then
        (cd "$ROOT" && cargo build --release -p deploykit-ffi)
    else
        (cd "$ROOT" && cargo build -p deploykit-ffi)
    fi
fi

OUT="$TARGET_DIR/$PROFILE"
for f in "$OUT/libdeploykit_c.so" "$OUT/libdeploykit_c.a"; do
    [ -f "$f" ] || die "$f is missing (build first, or drop --no-build)"
done

HEADER="$HERE/include/deploykit.h"
version_part() { awk -v n="DK_VERSION_$1" '$1 == "#define" && $2 == n { print $3 }' "$HEADER"; }
MAJOR="$(version_part MAJOR)"
VERSION="$MAJOR.$(version_part MINOR).$(version_part PATCH)"
SONAME="$(objdump -p "$OUT/libdeploykit_c.so" | awk '$1 == "SONAME" { print $2 }')"
[ "$SONAME" = "libdeploykit.so.$MAJOR" ] \
    || die "$OUT/libdeploykit_c.so has soname '${SONAME:-none}', not libdeploykit.so.$MAJOR (see ffi-c/build.rs; rebuild)"

# Relative forms for the .pc file when the directories sit under the prefix.
pc_dir() { # pc_dir DIR -> ${prefix}/... or DIR
    case "$1" in
        "$PREFIX") printf '${prefix}' ;;
        "$PREFIX"/*) printf '${prefix}/%s' "${1#"$PREFIX"/}" ;;
        *) printf '%s' "$1" ;;
    esac
}

STAGE_LIB="$DESTDIR$LIBDIR"
STAGE_INC="$DESTDIR$INCLUDEDIR"
install -d -m 0755 "$STAGE_LIB/pkgconfig" "$STAGE_INC"

# put SRC DEST MODE: copy next to DEST, then rename over it (atomic for readers).
put() {
    local tmp
    tmp="$(mktemp "$(dirname "$2")/.dk-install.XXXXXX")"
    cp -f -- "$1" "$tmp"
    chmod "$3" "$tmp"
    mv -f -- "$tmp" "$2"
}
# link TARGET NAME: a symlink NAME -> TARGET, replaced by rename.
link() {
    local tmp="$STAGE_LIB/.dk-install.link.$$"
    rm -f -- "$tmp"
    ln -s -- "$1" "$tmp"
    mv -fT -- "$tmp" "$STAGE_LIB/$2"
}

put "$OUT/libdeploykit_c.so" "$STAGE_LIB/libdeploykit.so.$VERSION" 0755
link "libdeploykit.so.$VERSION" "$SONAME"
link "$SONAME" libdeploykit.so
put "$OUT/libdeploykit_c.a" "$STAGE_LIB/libdeploykit.a" 0644
put "$HEADER" "$STAGE_INC/deploykit.h" 0644

pc="$(cat "$HERE/deploykit.pc.in")"
pc="${pc//@PREFIX@/"$PREFIX"}"
pc="${pc//@LIBDIR@/"$(pc_dir "$LIBDIR")"}"
pc="${pc//@INCLUDEDIR@/"$(pc_dir "$INCLUDEDIR")"}"
pc="${pc//@VERSION@/"$VERSION"}"
pc_tmp="$(mktemp "$STAGE_LIB/pkgconfig/.dk-install.XXXXXX")"
printf '%s\n' "$pc" >"$pc_tmp"
chmod 0644 "$pc_tmp"
mv -f -- "$pc_tmp" "$STAGE_LIB/pkgconfig/deploykit.pc"

echo "build.sh: installed libdeploykit $VERSION ($PROFILE, soname $SONAME) into ${DESTDIR:+$DESTDIR (DESTDIR) with }prefix $PREFIX, libdir $LIBDIR"
echo "build.sh: PKG_CONFIG_PATH=$STAGE_LIB/pkgconfig pkg-config --cflags --libs deploykit"
