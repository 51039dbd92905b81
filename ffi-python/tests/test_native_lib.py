"""What the installed extension (deploykit._native) links.

The binding takes core without default features plus `git` (commit capture with
libgit2, no network transport): no OpenSSL, HTTP server, SQLite or inotify
(issue #13; before it the extension needed libssl.so.3 and libcrypto.so.3).

DK_NATIVE_PROFILE (scripts/python-suite.sh sets `dev`; `release` for a
`pip install` build) selects the size ceiling; without it the size is not checked.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import deploykit._native as native

# Stripped size of the extension, in bytes, measured for #13 with core's default
# features (before) and with the binding's own (after):
#   release: 4979560 -> 4727600 (unstripped 91504912 -> 40679672)
#   dev:     10396816 -> 9583576 (unstripped 141224552 -> 62884296; scripts/python-suite.sh's build)
# The ceiling is the after size + 25% (headroom for growth; raise it on purpose).
CEILING = {"release": 5_900_000, "dev": 12_000_000}


def _so() -> Path:
    return Path(native.__file__)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) is missing")
def test_extension_needs_no_openssl():
    out = subprocess.run(["readelf", "-d", str(_so())], check=True, capture_output=True, text=True).stdout
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", out)
    assert needed, out
    assert not [n for n in needed if re.match(r"lib(ssl|crypto|ssh2|git2|sqlite)", n)], needed


@pytest.mark.skipif(shutil.which("strip") is None, reason="strip (binutils) is missing")
def test_extension_stripped_size_is_under_the_ceiling(tmp_path):
    profile = os.environ.get("DK_NATIVE_PROFILE")
    if profile not in CEILING:
        pytest.skip("DK_NATIVE_PROFILE (dev or release) is not set")
    stripped = tmp_path / "native.so"
    subprocess.run(["strip", "-o", str(stripped), str(_so())], check=True)
    size = stripped.stat().st_size
    assert 0 < size <= CEILING[profile], f"{_so().name} stripped is {size} bytes, over the {profile} ceiling {CEILING[profile]}"
