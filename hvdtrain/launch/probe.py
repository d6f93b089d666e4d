"""What one host offers a launch, as one JSON line: ``python -m hvdtrain.launch.probe``.

``hvdtrain preflight`` runs this on every host with the launcher's own interpreter path (over
``ssh``), and once in process on the launcher for comparison (``launch.preflight.checks``
compares).

Why it looks the way it does:

* Stdlib and hvdtrain's light modules only, no framework import: versions come from package
  metadata (``installed_version``, which ``hvdtrain env`` uses too), so a probe
  takes well under a second, and a host with a broken torch still answers.
* Horovod's build flags are asked of Horovod's own C library (``horovod_mpi_built`` and
  friends, exported by every framework extension), loaded with ``ctypes`` in a child process
  with a timeout. Horovod's Python helpers (``mpi_built()``) import the frameworks in forked
  processes, which took ~26 s on a busy 2-core host; this takes ~0.5 s.
* The run directory is tested where it will be written: directories that do not exist yet are
  created, a file is written and removed, and whatever the probe created is removed again.
  A marker file the launcher put there tells whether this host sees the launcher's directory.
* ``--deadline`` ends the probe by ``SIGALRM``: when the launcher gives up on a host (and kills
  its ``ssh``), the probe cannot outlive it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES: dict[str, tuple[str, ...]] = {
    "horovod": ("horovod",),
    "torch": ("torch",),
    "tensorflow": ("tensorflow-cpu", "tensorflow"),
    "mpi4py": ("mpi4py",),
}
BUILD_FLAGS = ("mpi", "gloo", "nccl", "ddl", "ccl", "cuda", "rocm")
# Each framework's Horovod extension, and the libraries to preload when its RUNPATH misses them.
EXTENSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "torch": ("torch/mpi_lib_v2", ("torch/lib/libc10.so", "torch/lib/libtorch_cpu.so",
                                   "torch/lib/libtorch_python.so")),
    "tensorflow": ("tensorflow/mpi_lib", ("tensorflow/libtensorflow_framework.so.2",
                                          "tensorflow/libtensorflow_cc.so.2")),
    "mxnet": ("mxnet/mpi_lib", ()),
}

# Run in a child: argv[1] = JSON {framework: [extension path, [preload paths]]}, in order.
_FLAGS_CHILD = """
import ctypes, json, os, sys
flags = None
for framework, (ext, preload) in json.loads(sys.argv[1]).items():
    try:
        for path in preload:
            if os.path.exists(path):
                ctypes.CDLL(path, mode=os.RTLD_LAZY | os.RTLD_GLOBAL)
        lib = ctypes.CDLL(ext, mode=os.RTLD_LAZY | os.RTLD_LOCAL)
        flags = {name: bool(getattr(lib, "horovod_%s_built" % name)())
                 for name in json.loads(sys.argv[2])}
        break
    except Exception:
        continue
print(json.dumps(flags))
"""


def installed_version(*distributions: str) -> str | None:
    """The version of the first of ``distributions`` that is installed (package metadata: no
    import). ``diagnostics`` (``hvdtrain env``) reads versions with it too, so the launcher's
    report and every host's probe compare alike."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _site_root(distribution: str) -> Path | None:
    try:
        return Path(str(metadata.distribution(distribution).locate_file("")))
    except metadata.PackageNotFoundError:
        return None


def horovod_build(timeout: float = 10.0) -> dict[str, Any] | None:
    """Which framework extensions Horovod has, what its C library was built with, and the
    framework versions it was compiled against. None when Horovod is not installed."""
    root = _site_root("horovod")
    if root is None:
        return None
    suffix = _ext_suffix() or ".so"
    found: dict[str, tuple[str, list[str]]] = {}
    for framework, (stem, preload) in EXTENSIONS.items():
        ext = root / "horovod" / (stem + suffix)
        if ext.is_file():
            found[framework] = (str(ext), [str(root / p) for p in preload])
    flags: dict[str, bool] | None = None
    if found:
        try:
            out = subprocess.run(
                [sys.executable, "-c", _FLAGS_CHILD, json.dumps(found), json.dumps(BUILD_FLAGS)],
                capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            flags = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 \
                else None
        except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
            flags = None
    try:
        built = json.loads((root / "horovod" / "metadata.json").read_text())
        built_against = {k: str(v) for k, v in built.items() if k in ("pytorch", "tensorflow")}
    except (OSError, ValueError, AttributeError):
        built_against = {}
    return {"frameworks": sorted(found), "flags": flags, "built_against": built_against}


def _ext_suffix() -> str:
    import sysconfig

    return str(sysconfig.get_config_var("EXT_SUFFIX") or "")


def ipv4_addresses(timeout: float = 5.0) -> list[dict[str, Any]] | None:
    """Every IPv4 address with its prefix length and interface (``ip -j addr``); None when
    ``ip`` is missing or says nothing usable."""
    try:
        out = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        links = json.loads(out.stdout) if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    if not isinstance(links, list):
        return None
    found = []
    for link in links:
        for addr in link.get("addr_info", []):
            if addr.get("family") == "inet" and "local" in addr:
                found.append({"interface": link.get("ifname", "?"), "address": addr["local"],
                              "prefixlen": int(addr.get("prefixlen", 32))})
    return found


def run_dir_status(run_dir: str, marker: str | None = None) -> dict[str, Any]:
    """Whether ``run_dir`` can be written here (created if needed, then removed again), and
    whether the launcher's ``marker`` file in it is visible (=> the directory is shared)."""
    path = Path(run_dir)
    status: dict[str, Any] = {"path": run_dir, "writable": False, "error": None, "shared": None}
    if marker:
        status["shared"] = (path / marker).exists()
    created: list[Path] = []
    try:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for directory in reversed(missing):
            directory.mkdir()
            created.append(directory)
        fd, name = tempfile.mkstemp(prefix=".hvdtrain-preflight-", dir=path)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
            os.unlink(name)
        status["writable"] = True
    except OSError as exc:
        status["error"] = f"{exc.strerror or exc.__class__.__name__}: {exc.filename or run_dir}"
    finally:
        for directory in reversed(created):
            try:
                directory.rmdir()
            except OSError:
                pass
    return status


def collect(run_dir: str | None = None, marker: str | None = None,
            timeout: float = 10.0) -> dict[str, Any]:
    import hvdtrain

    return {
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "hvdtrain": hvdtrain.__version__,
        "hvdtrain_path": str(Path(hvdtrain.__file__).resolve().parent),
        "packages": {name: installed_version(*dists) for name, dists in PACKAGES.items()},
        "horovod_build": horovod_build(timeout),
        "addresses": ipv4_addresses(min(timeout, 5.0)),
        "run_dir": run_dir_status(run_dir, marker) if run_dir else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hvdtrain.launch.probe",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--marker", default=None)
    parser.add_argument("--deadline", type=float, default=None,
                        help="exit (SIGALRM) after this many seconds")
    args = parser.parse_args(argv)
    if args.deadline and hasattr(signal, "SIGALRM"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.setitimer(signal.ITIMER_REAL, args.deadline)
    budget = max(1.0, (args.deadline or 20.0) - 1.0)
    print(json.dumps(collect(args.run_dir, args.marker, min(10.0, budget))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
