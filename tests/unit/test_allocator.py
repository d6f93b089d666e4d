"""The allocator each rank gets (``launch.allocator``) and that the rank wrapper applies it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hvdtrain.launch.allocator import (
    ALLOCATOR_ENV,
    chosen_library,
    find_tcmalloc,
    with_allocator,
)
from hvdtrain.launch.protocol import RunLayout

LIB = "/opt/lib/libtcmalloc_minimal.so.4"


def found() -> str:
    return LIB


def missing() -> None:
    return None


def test_auto_preloads_what_it_finds_and_quiets_large_alloc_reports() -> None:
    env, warning = with_allocator({"PATH": "/bin"}, found)
    assert env["LD_PRELOAD"] == LIB and warning is None
    assert int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40
    assert env["PATH"] == "/bin"


def test_other_preloads_are_kept_after_ours() -> None:
    env, _ = with_allocator({"LD_PRELOAD": "/x/libfoo.so"}, found)
    assert env["LD_PRELOAD"] == f"{LIB} /x/libfoo.so"


@pytest.mark.parametrize("user", ["/x/libjemalloc.so.2", "/y/libtcmalloc.so.4 /x/libfoo.so"])
def test_an_allocator_the_user_preloaded_wins(user: str) -> None:
    env, warning = with_allocator({"LD_PRELOAD": user}, found)
    assert env["LD_PRELOAD"] == user and warning is None


def test_system_and_absent_library_leave_glibc_without_a_warning() -> None:
    for env_in, finder in (({ALLOCATOR_ENV: "system"}, found), ({}, missing)):
        env, warning = with_allocator(env_in, finder)
        assert "LD_PRELOAD" not in env and warning is None


def test_a_named_library_must_exist(tmp_path: Path) -> None:
    library = tmp_path / "libmine.so"
    assert chosen_library({ALLOCATOR_ENV: str(library)}, found) is None
    env, warning = with_allocator({ALLOCATOR_ENV: str(library)}, found)
    assert "LD_PRELOAD" not in env
    assert warning is not None and "no such file" in warning and str(library) in warning
    library.write_bytes(b"")
    assert chosen_library({ALLOCATOR_ENV: str(library)}, found) == str(library)


def test_find_looks_in_the_given_directories(tmp_path: Path) -> None:
    assert find_tcmalloc([str(tmp_path)]) is None
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert find_tcmalloc([str(tmp_path / "none"), str(tmp_path)]) == str(
        tmp_path / "libtcmalloc_minimal.so.4")


def _mapped_in_child(run_dir: Path, setting: str) -> str:
    """Run a program under the real rank wrapper; it prints the libraries mapped into it."""
    subprocess.run([sys.executable, "-m", "hvdtrain.launch.rank_wrapper", str(run_dir), "--",
                    sys.executable, "-c", "print(open('/proc/self/maps').read())"],
                   env={"OMPI_COMM_WORLD_RANK": "0", "PATH": "/usr/bin:/bin",
                        ALLOCATOR_ENV: setting},
                   capture_output=True, text=True, timeout=60, check=True)
    return RunLayout(run_dir).stdout_log(0).read_text()


@pytest.mark.skipif(find_tcmalloc() is None, reason="libtcmalloc-minimal4 not installed "
                    "(scripts/setup.sh installs it when run as root)")
def test_the_rank_wrapper_preloads_tcmalloc_into_the_rank(tmp_path: Path) -> None:
    assert "libtcmalloc" in _mapped_in_child(tmp_path / "auto", "auto")
    assert "libtcmalloc" not in _mapped_in_child(tmp_path / "system", "system")
