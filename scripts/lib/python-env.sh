# shellcheck shell=bash
# The virtualenv the Python and browser suites share (.dk-test/venv, gitignored)
# and the deploykit package built into it. Source it after common.sh; nothing runs
# when sourced. Each function logs as WHO, appends its output to LOG and dies
# (with the log's tail) on failure.
#
#   dk_venv WHO LOG                      create the venv unless it exists (PYTHON picks
#                                        the interpreter, default python3)
#   dk_venv_pip WHO LOG MODULES SPEC...  pip install SPEC... unless `import MODULES` works
#                                        (MODULES: comma-separated, e.g. "pytest, stomp")
#   dk_deploykit_package WHO LOG [--if-missing]
#                                        pip install ./ffi-python: maturin compiles the
#                                        extension with the dev profile (so it shares
#                                        CARGO_TARGET_DIR with cargo's builds); with
#                                        --if-missing only when `import deploykit` fails

DK_VENV="$DK_ROOT/.dk-test/venv"
DK_VPY="$DK_VENV/bin/python"

dk_venv() {
    local who="$1" log="$2" python="${PYTHON:-python3}"
    [ -x "$DK_VPY" ] && return 0
    dk_log "$who: creating $DK_VENV"
    "$python" -m venv "$DK_VENV" >>"$log" 2>&1 \
        || { dk_tail_file "$log" 30; dk_die "$who: $python -m venv failed (Debian: apt-get install python3-venv)"; }
}

dk_venv_pip() {
    local who="$1" log="$2" modules="$3"
    shift 3
    dk_venv "$who" "$log"
    "$DK_VPY" -c "import $modules" >/dev/null 2>&1 && return 0
    dk_log "$who: pip install $* (into the venv)"
    "$DK_VPY" -m pip install --quiet --disable-pip-version-check "$@" >>"$log" 2>&1 \
        || { dk_tail_file "$log" 30; dk_die "$who: pip install failed (log: $log)"; }
}

dk_deploykit_package() {
    local who="$1" log="$2" t
    if [ "${3:-}" = --if-missing ] && "$DK_VPY" -c 'import deploykit' >/dev/null 2>&1; then
        return 0
    fi
    dk_venv_pip "$who" "$log" maturin 'maturin>=1.5,<2'
    # maturin builds the crate alone (like `cargo build -p deploykit-python`), so core gets only
    # the binding's features (test_native_lib.py checks: no OpenSSL, size ceiling for
    # DK_NATIVE_PROFILE=dev).
    t=$(dk_now)
    dk_log "$who: pip install ./ffi-python (maturin build)"
    PATH="$DK_VENV/bin:$PATH" MATURIN_PEP517_ARGS="--profile dev" "$DK_VPY" -m pip install --disable-pip-version-check \
        --no-build-isolation --no-deps --force-reinstall "$DK_ROOT/ffi-python" >>"$log" 2>&1 \
        || { dk_tail_file "$log" 40; dk_die "$who: building the Python package failed (log: $log)"; }
    dk_log "$who: deploykit $("$DK_VPY" -c 'import deploykit; print(deploykit.__version__)') installed in $(dk_elapsed "$t")s"
}
