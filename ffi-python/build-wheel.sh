#!/usr/bin/env bash
# Builds the release wheel of the `deploykit` Python package and checks it.
#
#   ffi-python/build-wheel.sh [--out DIR]
#   ffi-python/build-wheel.sh --help
#
#   --out DIR   where the wheel goes (default: $CARGO_TARGET_DIR/wheels, or target/wheels)
#
# Steps:
#   1. a build virtualenv (.dk-test/venv, the one scripts/python-suite.sh uses;
#      created when missing) with maturin and auditwheel from PyPI, when missing
#   2. maturin build --release --strip: one abi3 wheel (pyo3 abi3-py39, so
#      CPython 3.9 and later), tagged with the oldest manylinux this build
#      allows (maturin's auditwheel check picks it from the glibc symbol
#      versions the extension needs; this machine has glibc 2.36)
#   3. auditwheel show: the wheel must be consistent with its manylinux tag
#   4. the extension (deploykit/_native.abi3.so) must not need OpenSSL,
#      libgit2 or libssh2 (readelf -d NEEDED: core without its fetch transports)
#   5. pip install of the wheel into a fresh virtualenv in a temporary
#      directory, with cargo off PATH, then `import deploykit` there
# Prints the wheel's path, its size, the extension's size and the tag.
#
# Environment: PYTHON (default python3) makes the virtualenvs; CARGO_TARGET_DIR
# is honoured. Builds the crate alone (core with only the binding's features).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PYTHON="${PYTHON:-python3}"
VENV="$ROOT/.dk-test/venv"
VPY="$VENV/bin/python"

die() { printf 'build-wheel.sh: %s\n' "$*" >&2; exit 1; }
log() { printf 'build-wheel.sh: %s\n' "$*" >&2; }
usage_error() { printf 'build-wheel.sh: %s (try --help)\n' "$*" >&2; exit 64; }

OUT=
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] && [ -n "$2" ] || usage_error "--out needs a directory"; OUT="$2"; shift ;;
        --out=*) OUT="${1#--out=}" ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) usage_error "unknown argument $1" ;;
    esac
    shift
done
[ -n "$OUT" ] || OUT="$TARGET_DIR/wheels"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
command -v readelf >/dev/null || die "readelf is missing (Debian: binutils)"

SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/dk-wheel.XXXXXX")"
trap 'rm -rf -- "$SCRATCH"' EXIT

# 1. The build tools.
if [ ! -x "$VPY" ]; then
    log "creating $VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv failed (Debian: apt-get install python3-venv)"
fi
if ! "$VPY" -c 'import maturin, auditwheel' >/dev/null 2>&1; then
    log "pip install maturin auditwheel (into $VENV)"
    "$VPY" -m pip install --quiet --disable-pip-version-check 'maturin>=1.5,<2' 'auditwheel>=6,<7' \
        || die "pip install maturin auditwheel failed"
fi

# 2. The wheel, built where only this run's wheel can be, then moved to OUT.
log "maturin build --release --strip (abi3, manylinux)"
(cd "$HERE" && PATH="$VENV/bin:$PATH" maturin build --release --strip --out "$SCRATCH/dist" --manifest-path "$HERE/Cargo.toml") \
    || die "maturin build failed"
shopt -s nullglob
built=("$SCRATCH"/dist/deploykit-*.whl)
shopt -u nullglob
[ "${#built[@]}" = 1 ] || die "expected one wheel from maturin, found ${#built[@]}"
name="$(basename "${built[0]}")"
case "$name" in
    *-cp39-abi3-manylinux_*_x86_64*.whl|*-cp39-abi3-manylinux_*_aarch64*.whl) ;;
    *) die "$name is not a cp39-abi3 manylinux wheel" ;;
esac
tag="${name#*-abi3-}"
tag="${tag%.whl}"

# 3. auditwheel's verdict on the wheel as it is.
"$VENV/bin/auditwheel" show "${built[0]}" >"$SCRATCH/auditwheel.txt" 2>&1 || { cat "$SCRATCH/auditwheel.txt" >&2; die "auditwheel show failed"; }
verdict="$(tr '\n' ' ' <"$SCRATCH/auditwheel.txt" | sed -n 's/.*consistent with the following platform tag: *"\{0,1\}\([a-z0-9_]*\)"\{0,1\}.*/\1/p')"
[ -n "$verdict" ] || { cat "$SCRATCH/auditwheel.txt" >&2; die "auditwheel show gives no manylinux platform tag for $name"; }
case "$verdict" in manylinux_*) ;; *) cat "$SCRATCH/auditwheel.txt" >&2; die "auditwheel: $name is not manylinux-compliant ($verdict)" ;; esac
case ".$tag." in
    *".$verdict."*) ;;
    *) cat "$SCRATCH/auditwheel.txt" >&2; die "the wheel's tag $tag is not the one auditwheel finds ($verdict)" ;;
esac

# 4. What the extension links.
"$VPY" - "${built[0]}" "$SCRATCH/unpacked" <<'EOF' || die "cannot unpack the wheel"
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
EOF
so="$(find "$SCRATCH/unpacked/deploykit" -maxdepth 1 -name '_native*.so' -print -quit)"
[ -n "$so" ] || die "no deploykit/_native*.so in $name"
case "$(basename "$so")" in _native.abi3.so) ;; *) die "the extension is $(basename "$so"), not _native.abi3.so" ;; esac
needed="$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
if printf '%s\n' "$needed" | grep -qE 'libssl|libcrypto|libgit2|libssh2|libsqlite'; then
    die "the extension needs OpenSSL/libgit2/libssh2/SQLite (NEEDED: $needed)"
fi
if readelf -s --wide "$so" | grep -qE ' (SSL_CTX_new|OPENSSL_init_ssl)$'; then
    die "the extension has OpenSSL linked in statically"
fi
so_size="$(stat -c %s "$so")"

mv -f -- "${built[0]}" "$OUT/$name"
WHEEL="$OUT/$name"
wheel_size="$(stat -c %s "$WHEEL")"

# 5. A fresh virtualenv, no cargo on PATH, outside the source tree.
log "checking: pip install into a fresh virtualenv, then import deploykit"
"$PYTHON" -m venv "$SCRATCH/venv" || die "$PYTHON -m venv failed"
"$SCRATCH/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --no-deps "$WHEEL" \
    || die "pip install $name into a fresh virtualenv failed"
(cd "$SCRATCH" && env -u PYTHONPATH -u CARGO_HOME PATH="$SCRATCH/venv/bin:/usr/bin:/bin" \
    "$SCRATCH/venv/bin/python" - "$SCRATCH/venv" <<'EOF') || die "import deploykit from the installed wheel failed"
import shutil, sys
from pathlib import Path
import deploykit, deploykit._native as native
assert shutil.which("cargo") is None, "cargo is on PATH"
assert Path(native.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), native.__file__
assert issubclass(deploykit.TimeoutError, TimeoutError) and issubclass(deploykit.TimeoutError, deploykit.Error)
assert issubclass(deploykit.ConnectionError, ConnectionError) and issubclass(deploykit.ConnectionError, deploykit.Error)
print(f"build-wheel.sh: import deploykit {deploykit.__version__} from {Path(native.__file__).name} in a fresh virtualenv: ok", file=sys.stderr)
EOF

printf 'wheel: %s\n' "$WHEEL"
printf 'wheel size: %s bytes\n' "$wheel_size"
printf 'extension: deploykit/%s, %s bytes (stripped), NEEDED: %s\n' "$(basename "$so")" "$so_size" "$needed"
printf 'platform tag: %s (auditwheel show: consistent with %s)\n' "$tag" "$verdict"
