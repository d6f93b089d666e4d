#!/usr/bin/env bash
# Set up everything hvdtrain needs, idempotently: MPI from Debian, a .venv with the CPU
# PyTorch and TensorFlow builds, and Horovod built from its sdist with our three edits
# (cached wheel after the first time). Safe to run again; each step checks before it acts.
#
# Variables: PYTHON (interpreter for the venv, default python3), HVDTRAIN_VENV (default .venv),
# HVDTRAIN_CACHE_DIR (wheel cache), HOROVOD_* (passed through to the Horovod build).
# For images (docker/Dockerfile*): HVDTRAIN_TORCH_VARIANT (a local version label: "cpu" pins
# torch==X+cpu, so no index can hand out the CUDA build), HVDTRAIN_TF_PACKAGE (default
# tensorflow-cpu; "tensorflow" on GPU), HVDTRAIN_EXTRAS (default ml,lm,serve,dev) and
# HVDTRAIN_EDITABLE (default 1; 0 installs hvdtrain as a copy, for an image's venv).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${HVDTRAIN_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0${HVDTRAIN_TORCH_VARIANT:+"+$HVDTRAIN_TORCH_VARIANT"}"
TF_VERSION="2.21.0"
TF_PACKAGE="${HVDTRAIN_TF_PACKAGE:-tensorflow-cpu}"
EXTRAS="${HVDTRAIN_EXTRAS-ml,lm,serve,dev}"
SELF=(".${EXTRAS:+[$EXTRAS]}")
if [ "${HVDTRAIN_EDITABLE:-1}" = 1 ]; then SELF=(-e "${SELF[@]}"); fi

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# 1. MPI (OpenMPI from Debian: mpirun plus headers for mpi4py and Horovod).
if ! command -v mpirun >/dev/null 2>&1 || ! command -v mpicc >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing OpenMPI (openmpi-bin libopenmpi-dev) with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends openmpi-bin libopenmpi-dev >/dev/null
    else
        die "MPI is missing. Install it first, e.g. 'sudo apt-get install openmpi-bin libopenmpi-dev' (or 'module load openmpi' on a cluster), then rerun."
    fi
fi
say "MPI: $(mpirun --version 2>/dev/null | head -n1)"

# 1b. tcmalloc, which the rank wrapper preloads into every rank (hvdtrain/launch/allocator.py:
#     glibc re-faults large tensors every step). Optional: without root hvdtrain runs on glibc.
have_tcmalloc() {
    local lib
    for lib in /usr/lib/*/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4; do
        [ -f "$lib" ] && return 0
    done
    return 1
}
if ! have_tcmalloc; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing tcmalloc (libtcmalloc-minimal4) with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get install -y -qq --no-install-recommends libtcmalloc-minimal4 >/dev/null 2>&1 ||
          { apt-get update -qq && apt-get install -y -qq --no-install-recommends libtcmalloc-minimal4 >/dev/null; }; } ||
          say "note: could not install libtcmalloc-minimal4; ranks use glibc's malloc"
    else
        say "note: libtcmalloc-minimal4 is not installed; ranks use glibc's malloc (slower for large tensors)"
    fi
fi

# 1c. shellcheck for `make lint` (Debian's; hadolint comes from PyPI with the dev extra). Only
#     where the dev tools are installed: an image (HVDTRAIN_EXTRAS=ml) does not lint.
if [[ ",$EXTRAS," == *,dev,* ]] && ! command -v shellcheck >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing shellcheck with apt-get (for make lint)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get install -y -qq --no-install-recommends shellcheck >/dev/null 2>&1 ||
          { apt-get update -qq && apt-get install -y -qq --no-install-recommends shellcheck >/dev/null; }; } ||
          say "note: could not install shellcheck; make lint needs it"
    else
        say "note: shellcheck is not installed; make lint needs it ('sudo apt-get install shellcheck')"
    fi
fi

# 2. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
LOG="$VENV/setup.log"
# pip's and setuptools' chatter goes to the log; on failure its tail is shown.
quietly() {
    "$@" >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "'$*' failed; full log: $LOG"; }
}

# 3. Frameworks and Horovod's build/runtime needs. torch is pinned to the CPU build on disk;
#    a bare 'torch' would pull a multi-GB CUDA build.
want_frameworks() {
    "$VENV/bin/python" - "$TORCH_VERSION" "$TF_VERSION" "$TF_PACKAGE" <<'PY'
import sys
from importlib import metadata
want = {"torch": sys.argv[1], sys.argv[3]: sys.argv[2]}
for name, version in want.items():
    try:
        have = metadata.version(name)
        # A pinned variant (2.13.0+cpu) must match exactly; otherwise any local label does.
        if (have if "+" in version else have.split("+")[0]) != version:
            sys.exit(1)
    except metadata.PackageNotFoundError:
        sys.exit(1)
PY
}
if ! want_frameworks; then
    say "installing torch==$TORCH_VERSION and $TF_PACKAGE==$TF_VERSION (a few minutes)"
    quietly "${PIP[@]}" install --upgrade pip setuptools wheel
    quietly "${PIP[@]}" install "torch==$TORCH_VERSION" "$TF_PACKAGE==$TF_VERSION"
fi
say "installing hvdtrain and its dependencies into $VENV"
quietly "${PIP[@]}" install packaging numpy cloudpickle psutil pyyaml cffi
quietly "${PIP[@]}" install "${SELF[@]}" "torch==$TORCH_VERSION"

# 4. Horovod, built once against exactly these frameworks, then reused from the cache.
"$VENV/bin/python" scripts/build_horovod.py

say "ready: $("$VENV/bin/hvdtrain" --version)"
