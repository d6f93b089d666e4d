"""``hvdtrain env``: what is installed, what Horovod was built with, and how to fix problems.

Versions come from package metadata, so printing them imports no framework. What Horovod was
built with is asked of Horovod itself in a subprocess (its own ``extension_available`` /
``mpi_built`` checks), and the framework versions it was compiled against come from the
``metadata.json`` its build writes. Each problem carries a one-line fix.

It reports on what ``launch`` does (the allocator, the probe's version reading), so it sits
above ``launch`` and only imports from it; nothing in ``launch`` imports this module.
"""

from __future__ import annotations

import mmap
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from hvdtrain import __version__
from hvdtrain.cluster.sources import count_local_gpus
from hvdtrain.launch.argv import mpirun_version
from hvdtrain.launch.probe import horovod_build, installed_version

SETUP_FIX = "run 'bash scripts/setup.sh' (or 'make setup') in the hvdtrain checkout"

def _mpi_version() -> str | None:
    version = mpirun_version()
    return version.splitlines()[0] if version else None


def _horovod_build() -> tuple[dict[str, Any] | None, dict[str, str]]:
    """Horovod's build as ``launch.probe`` reads it for every host in a preflight (its C
    library's own flags, through ctypes, in about half a second), shaped for the report; and
    the framework versions it was compiled against. (None, {}) when it cannot be loaded."""
    probe = horovod_build(timeout=60.0)
    if probe is None:
        return None, {}
    flags = probe["flags"]
    if flags is None:
        return None, probe["built_against"]
    return {
        "frameworks": {fw: fw in probe["frameworks"] for fw in ("torch", "tensorflow")},
        "controllers": {name: bool(flags.get(name)) for name in ("mpi", "gloo")},
        "tensor_ops": {name: bool(flags.get(name)) for name in ("nccl", "mpi", "gloo", "ddl",
                                                                 "ccl")},
    }, probe["built_against"]


def _horovod_path(relative: str) -> Path | None:
    """Where ``relative`` (``horovod/...``) is in the installed Horovod; None without it."""
    try:
        dist = metadata.distribution("horovod")
    except metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file(relative)))


def _keras3_edits_applied() -> bool | None:
    """Whether the installed Horovod carries build_horovod.py's Keras 3 edits (read from its
    files, no import); None without Horovod."""
    compat = _horovod_path("horovod/tensorflow/keras3_compat.py")
    keras_impl = _horovod_path("horovod/_keras/__init__.py")
    if compat is None or keras_impl is None:
        return None
    try:
        return compat.is_file() and "_keras3.create_distributed_optimizer" in keras_impl.read_text()
    except OSError:
        return False


# What build_horovod.py's bfloat16 sum leaves in each framework's Horovod library: torch's bf16
# allreduce entry point, and TensorFlow's allreduce op registered with bfloat16 among its types.
BF16_SUM_MARKERS = (
    ("horovod/torch", "mpi_lib_v2*.so", b"horovod_torch_allreduce_async_torch_BFloat16Tensor"),
    ("horovod/tensorflow", "mpi_lib*.so",
     b"T: {uint8, int8, int32, int64, float16, bfloat16, float32, float64}"),
)


def _bf16_sum_edits_applied() -> bool | None:
    """Whether every installed Horovod framework library has build_horovod.py's bfloat16 sum
    (read from the libraries' bytes, no import); None without any of them."""
    found = []
    for folder, pattern, marker in BF16_SUM_MARKERS:
        where = _horovod_path(folder)
        libraries = sorted(where.glob(pattern)) if where else []
        if libraries:
            found.append(_contains(libraries[0], marker))
    return all(found) if found else None


def _contains(path: Path, marker: bytes) -> bool:
    try:
        with path.open("rb") as lib, mmap.mmap(lib.fileno(), 0, access=mmap.ACCESS_READ) as image:
            return image.find(marker) >= 0
    except (OSError, ValueError):
        return False


def _allocator() -> dict[str, Any]:
    """What the rank wrapper preloads here (``launch.allocator``), and how to get it where
    ranks start without the wrapper (a user's own mpirun or srun)."""
    import os

    from hvdtrain.launch.allocator import ALLOCATOR_ENV, chosen_library, setting

    choice = setting(os.environ)
    library = chosen_library(os.environ)
    if library:
        hint = f"under your own mpirun/srun: export LD_PRELOAD={library}"
    elif choice == "auto":
        hint = ("apt-get install libtcmalloc-minimal4: large tensors then stop page-faulting "
                "every step (docs/BENCHMARKS.md)")
    else:
        hint = f"{ALLOCATOR_ENV}={choice}: glibc's malloc in every rank"
    return {"setting": choice, "library": library, "hint": hint}


def collect_report() -> dict[str, Any]:
    versions = {
        "python": platform.python_version(),
        "hvdtrain": __version__,
        "torch": installed_version("torch"),
        "tensorflow": installed_version("tensorflow-cpu", "tensorflow"),
        "keras": installed_version("keras"),
        "horovod": installed_version("horovod"),
        "mpi4py": installed_version("mpi4py"),
        "click": installed_version("click"),
    }
    problems: list[dict[str, str]] = []

    def problem(what: str, fix: str) -> None:
        problems.append({"problem": what, "fix": fix})

    for name in ("torch", "tensorflow", "horovod", "mpi4py"):
        if versions[name] is None:
            problem(f"{name} is not installed", SETUP_FIX)
    mpi = _mpi_version()
    if mpi is None:
        problem("mpirun not found", "apt-get install openmpi-bin libopenmpi-dev (or module load)")
    build, built = _horovod_build() if versions["horovod"] else (None, {})
    if versions["horovod"] and build is None:
        problem("horovod is installed but cannot be imported", SETUP_FIX)
    if build:
        for framework, ok in build["frameworks"].items():
            if not ok and versions[framework]:
                problem(f"horovod was built without {framework} support", SETUP_FIX)
        for controller, ok in build["controllers"].items():
            if not ok:
                problem(f"horovod was built without the {controller} controller", SETUP_FIX)
    keras3_edits = _keras3_edits_applied()
    if keras3_edits is False and int((versions["keras"] or "0").split(".")[0]) >= 3:
        problem("horovod lacks the Keras 3 compatibility edits (its TensorFlow/Keras API fails "
                "or does not average on Keras 3)", "rebuild horovod: python "
                "scripts/build_horovod.py --force-rebuild")
    matches: dict[str, bool] = {}
    for key, installed in (("pytorch", versions["torch"]), ("tensorflow", versions["tensorflow"])):
        if key in built and installed:
            matches[key] = built[key].split("+")[0] == installed.split("+")[0]
            if not matches[key]:
                problem(f"horovod was built against {key} {built[key]} but {installed} is "
                        "installed", "rebuild horovod: python scripts/build_horovod.py "
                        "--force-rebuild (setup.sh does this when versions change)")
    return {
        "versions": versions,
        "mpi": mpi,
        "horovod_build": build,
        "horovod_built_against": built,
        "framework_versions_match": matches,
        "keras3_compat_edits": keras3_edits,
        "bf16_sum_edits": _bf16_sum_edits_applied(),
        "gpus_visible": count_local_gpus(),
        "allocator": _allocator(),
        "problems": problems,
    }


def render_report(report: dict[str, Any]) -> str:
    lines = ["versions:"]
    lines += [f"  {k:<11} {v or 'not installed'}" for k, v in report["versions"].items()]
    lines.append(f"mpi:         {report['mpi'] or 'not found'}")
    build = report["horovod_build"]
    if build:
        def marks(section: dict[str, bool]) -> str:
            return "  ".join(f"[{'X' if ok else ' '}] {name}" for name, ok in section.items())

        lines += ["horovod build:",
                  f"  frameworks   {marks(build['frameworks'])}",
                  f"  controllers  {marks(build['controllers'])}",
                  f"  tensor ops   {marks(build['tensor_ops'])}"]
    for key, ok in report["framework_versions_match"].items():
        built = report["horovod_built_against"][key]
        lines.append(f"  built against {key} {built}: {'matches' if ok else 'MISMATCH'}")
    if report.get("keras3_compat_edits") is not None:
        applied = "applied" if report["keras3_compat_edits"] else "MISSING"
        lines.append(f"  Keras 3 compatibility edits: {applied}")
    if report.get("bf16_sum_edits") is not None:
        lines.append("  bf16 sum edits: " + (
            "applied (--compression bf16: one allreduce, under MPI)"
            if report["bf16_sum_edits"] else
            "missing (--compression bf16: an alltoall and an allgather)"))
    lines.append(f"gpus visible: {report['gpus_visible']}")
    allocator = report.get("allocator")
    if allocator:
        lines += [f"allocator:   {allocator['library'] or 'glibc malloc'} "
                  f"({allocator['setting']}; HVDTRAIN_ALLOCATOR=auto|system|PATH)",
                  f"  {allocator['hint']}"]
    if report["problems"]:
        lines.append("problems:")
        lines += [f"  - {p['problem']}\n    fix: {p['fix']}" for p in report["problems"]]
    else:
        lines.append("no problems found")
    return "\n".join(lines)
