"""A small filesystem to fill up: a size-limited tmpfs, for the full-disk tests of every tier.

A real full disk, not a mocked ``write``: the libraries hvdtrain writes through (torch's C++
stream writer, NumPy, Keras) each fail in their own way, and only a real ENOSPC shows which.
Mounting needs root; elsewhere the tests that use it are skipped. The mount is always undone
(lazily, so a process that still holds a file there cannot keep it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_filesystem(directory: Path, size_bytes: int) -> Iterator[Path]:
    """``directory`` (made if missing) as an empty tmpfs of ``size_bytes`` (rounded up to
    whole pages by the kernel) for the life of the ``with``."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755",
                           "tmpfs", str(directory)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)
