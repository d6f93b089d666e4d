"""Build (or reuse) a Horovod wheel that works with today's PyTorch and TensorFlow.

Why this exists: Horovod's last release (0.28.1) does not build as published against
PyTorch >= 2.1 or TensorFlow >= 2.16. Three small edits to its sdist fix that (see
``shared/HOROVOD_BUILD.md``). We apply them here, from our own code, to the pristine sdist
downloaded from PyPI; nothing of Horovod is vendored in this repository.

The build takes minutes, so the wheel is cached, keyed by everything that changes its ABI:
Horovod, torch, tensorflow and Python versions plus the ``HOROVOD_*`` build variables a GPU
cluster passes through (``HOROVOD_GPU_OPERATIONS=NCCL`` and friends). A second set-up
installs the cached wheel in seconds.

Run it with the interpreter of the environment to install into (``.venv/bin/python``).
Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

HOROVOD_VERSION = "0.28.1"

# Build variables that change what gets compiled. They are passed through to the build and
# are part of the cache key. The four framework/controller switches are always set by us.
PASSTHROUGH_PREFIXES = ("HOROVOD_",)
FIXED_BUILD_ENV = {
    "HOROVOD_WITH_PYTORCH": "1",
    "HOROVOD_WITH_TENSORFLOW": "1",
    "HOROVOD_WITHOUT_MXNET": "1",
    "HOROVOD_WITH_MPI": "1",
    "HOROVOD_WITH_GLOO": "1",
}


@dataclass(frozen=True)
class SourceEdit:
    """One literal text replacement in the sdist, checked before and after."""

    path: str
    old: str
    new: str
    why: str


EDITS = (
    SourceEdit(
        "CMakeLists.txt",
        "set(CMAKE_CXX_STANDARD 14)\n",
        "set(CMAKE_CXX_STANDARD 17)\n",
        "PyTorch >= 2.1 headers need C++17; Gloo must use the same standard as the torch op",
    ),
    SourceEdit(
        "horovod/torch/CMakeLists.txt",
        "    set(CMAKE_CXX_STANDARD 14)\n",
        "    set(CMAKE_CXX_STANDARD 17)\n",
        "same fix as upstream PR #3998 (merged after 0.28.1, never released)",
    ),
    SourceEdit(
        "horovod/tensorflow/CMakeLists.txt",
        'list(APPEND TF_SOURCES "${PROJECT_SOURCE_DIR}/horovod/tensorflow/xla_mpi_ops.cc")\n',
        "",
        "xla_mpi_ops.cc needs XLA headers TF 2.21 no longer ships (opt-in XLA path only)",
    ),
)


def log(message: str) -> None:
    print(f"[horovod] {message}", flush=True)


def build_env_overrides() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(PASSTHROUGH_PREFIXES)}
    env.update(FIXED_BUILD_ENV)
    return dict(sorted(env.items()))


def cache_key() -> str:
    torch_version = metadata.version("torch")
    tf_version = metadata.version("tensorflow-cpu") if _has("tensorflow-cpu") else (
        metadata.version("tensorflow")
    )
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    env_digest = hashlib.sha256(repr(build_env_overrides()).encode()).hexdigest()[:10]
    return (
        f"horovod{HOROVOD_VERSION}-torch{torch_version}-tf{tf_version}-{py}-"
        f"{platform.machine()}-{env_digest}"
    )


def _has(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def apply_edits(source_dir: Path) -> None:
    for edit in EDITS:
        target = source_dir / edit.path
        text = target.read_text()
        if edit.old not in text:
            raise SystemExit(
                f"[horovod] cannot apply edit to {edit.path}: expected text not found "
                f"({edit.old.strip()!r}); is this really horovod-{HOROVOD_VERSION}?"
            )
        target.write_text(text.replace(edit.old, edit.new, 1))
        log(f"edited {edit.path}: {edit.why}")


def extract_sdist(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest`` safely on every Python we support.

    ``extractall(filter="data")`` arrived in 3.11.4 (and in 3.8.17/3.9.17/3.10.12); Debian 12's
    stock python3 is 3.11.2, HPC distro Pythons are older still. There we check by hand what
    the ``data`` filter would refuse: only regular files and directories (an sdist holds
    nothing else), every path inside ``dest``, no setuid/setgid/sticky or group/other-write
    bits.
    """
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        root = dest.resolve()
        members = []
        for member in tar.getmembers():
            target = (root / member.name).resolve()
            inside = target == root or root in target.parents
            if not inside or not (member.isfile() or member.isdir()):
                raise SystemExit(
                    f"[horovod] refusing to unpack {archive.name}: member {member.name!r} is "
                    + ("outside the target directory" if not inside else "not a plain file")
                )
            member.mode &= 0o755
            members.append(member)
        tar.extractall(dest, members=members)


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def run_with_heartbeat(argv: list[str], env: dict[str, str], log_path: Path) -> int:
    """Run a long command, writing its output to ``log_path``; print progress every 20 s."""
    started = time.monotonic()
    with log_path.open("w") as sink:
        proc = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(20):
                last = _last_line(log_path)
                log(f"building… {time.monotonic() - started:4.0f}s  {last[:110]}")

        thread = threading.Thread(target=heartbeat, daemon=True)
        thread.start()
        code = proc.wait()
        done.set()
        thread.join()
    return code


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def build_wheel(wheel_dir: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="hvdtrain-horovod-") as tmp:
        work = Path(tmp)
        log(f"downloading the horovod {HOROVOD_VERSION} sdist from PyPI")
        subprocess.run(
            pip("download", "--no-deps", "--no-binary", ":all:", "-d", str(work),
                f"horovod=={HOROVOD_VERSION}"),
            check=True,
        )
        sdist = next(work.glob(f"horovod-{HOROVOD_VERSION}.tar.gz"))
        extract_sdist(sdist, work)
        source = work / f"horovod-{HOROVOD_VERSION}"
        apply_edits(source)

        env = dict(os.environ)
        env.update(build_env_overrides())
        env.setdefault("MAKEFLAGS", f"-j{os.cpu_count() or 2}")
        shown = " ".join(f"{k}={v}" for k, v in build_env_overrides().items())
        log(f"compiling (several minutes on 2 cores) with {shown}")
        out = work / "wheel"
        wheel_dir.parent.mkdir(parents=True, exist_ok=True)
        log_path = wheel_dir.parent / f"build-{wheel_dir.name}.log"
        code = run_with_heartbeat(
            pip("wheel", "-v", "--no-build-isolation", "--no-deps", "-w", str(out), str(source)),
            env,
            log_path,
        )
        if code != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
            raise SystemExit(f"{tail}\n[horovod] build failed (exit {code}); full log: {log_path}")
        built = next(out.glob("horovod-*.whl"))
        wheel_dir.mkdir(parents=True, exist_ok=True)
        final = wheel_dir / built.name
        shutil.copy2(built, final.with_suffix(".tmp"))
        os.replace(final.with_suffix(".tmp"), final)
        log(f"cached {final}")
        return final


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hvdtrain"
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(os.environ.get("HVDTRAIN_CACHE_DIR", default_cache))
    )
    parser.add_argument("--force-rebuild", action="store_true")
    args = parser.parse_args()

    key = cache_key()
    stamp = Path(sys.prefix) / "hvdtrain-horovod-build.txt"
    if not args.force_rebuild and _has("horovod") and stamp.exists() and (
        stamp.read_text().strip() == key
    ):
        log(f"installed and current ({key})")
        return 0

    wheel_dir = args.cache_dir / "horovod" / key
    wheels = sorted(wheel_dir.glob("horovod-*.whl")) if wheel_dir.is_dir() else []
    if wheels and not args.force_rebuild:
        wheel = wheels[-1]
        log(f"reusing cached wheel {wheel}")
    else:
        wheel = build_wheel(wheel_dir)
    subprocess.run(pip("install", "--no-deps", "--force-reinstall", str(wheel)), check=True)
    stamp.write_text(key + "\n")
    log(f"installed {wheel.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
