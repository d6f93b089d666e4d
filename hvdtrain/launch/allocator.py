"""tcmalloc for every rank, when the host has it: large tensors stop page-faulting every step.

Why: glibc's malloc serves each block above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and unmaps it on free, so every large tensor (an allreduce output, a fused gradient
buffer, an fp16 copy, a gradient of a big layer) is faulted in and zeroed by the kernel again
on every step. tcmalloc keeps freed memory for reuse. Measured on this project's 2-core
machine (docs/BENCHMARKS.md, "Memory allocator"): a 64 MiB fp32 allreduce between 2 ranks
70-87 ms with glibc, 19-21 ms with tcmalloc; PyTorch's and TensorFlow's CPU performance
guides recommend tcmalloc (or jemalloc) for the same reason.

The rank wrapper applies this per host (the library may sit elsewhere, or be absent, on
another host): ``HVDTRAIN_ALLOCATOR=auto`` (default) preloads tcmalloc if found,
``system`` keeps glibc's malloc, a path preloads that library. A preload the user set
already is left alone. Ranks started by a user's own ``mpirun``/``srun`` (no wrapper) need
``LD_PRELOAD`` themselves: ``hvdtrain env`` prints the line to use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

ALLOCATOR_ENV = "HVDTRAIN_ALLOCATOR"
LIBRARIES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")  # Debian/Ubuntu/RHEL sonames
SEARCH_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
               "/usr/lib", "/usr/local/lib")
# tcmalloc prints "large alloc" to stderr for each block over 1 GiB (a big embedding, a
# fused buffer): noise in every rank's log, so only absurd sizes are reported
QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}


def find_tcmalloc(dirs: Iterable[str] = SEARCH_DIRS) -> str | None:
    for directory in dirs:
        for name in LIBRARIES:
            candidate = Path(directory) / name
            if candidate.is_file():
                return str(candidate)
    return None


def setting(env: Mapping[str, str]) -> str:
    """``HVDTRAIN_ALLOCATOR``: ``auto`` (also when unset or empty), ``system`` or a path."""
    return env.get(ALLOCATOR_ENV, "").strip() or "auto"


def chosen_library(env: Mapping[str, str],
                   find: Callable[[], str | None] = find_tcmalloc) -> str | None:
    """The library to preload for ``env``'s setting, or None for glibc's malloc."""
    choice = setting(env)
    if choice == "system":
        return None
    if choice == "auto":
        return find()
    return choice if Path(choice).is_file() else None


def with_allocator(env: Mapping[str, str], find: Callable[[], str | None] = find_tcmalloc
                   ) -> tuple[dict[str, str], str | None]:
    """``env`` with the chosen allocator preloaded, and a warning for the rank's log when a
    library named in ``HVDTRAIN_ALLOCATOR`` does not exist (glibc's malloc is used then)."""
    child = dict(env)
    preloaded = child.get("LD_PRELOAD", "")
    if "malloc" in preloaded:  # tcmalloc/jemalloc/mimalloc chosen by the user: theirs wins
        return child, None
    library = chosen_library(env, find)
    if library is None:
        choice = setting(env)
        if choice not in ("auto", "system"):
            return child, f"{ALLOCATOR_ENV}={choice}: no such file; glibc's malloc is used"
        return child, None
    child["LD_PRELOAD"] = f"{library} {preloaded}".strip()
    for name, value in QUIET.items():
        child.setdefault(name, value)
    return child, None
