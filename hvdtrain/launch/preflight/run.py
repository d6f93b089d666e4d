"""The whole preflight (``run_preflight``): every host of a plan in parallel, then MPI.

The launcher probes itself (the reference every host is compared with) and places a marker
file in the run directory, so each host's probe can say whether it sees the same directory;
remote hosts are reached in parallel (``remote``), localhost-type ones are the reference. The
MPI allreduce smoke test runs last, over the plan's placement and through the same
``mpirun_command`` a launch uses, and only when every host passed.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hvdtrain.cluster.planning import Plan
from hvdtrain.launch import probe as probe_module
from hvdtrain.launch.argv import ALWAYS_EXPORT, detect_mpi_flavour, mpirun_command
from hvdtrain.launch.network import is_local
from hvdtrain.launch.preflight.checks import (
    SMOKE_PROGRAM,
    compare,
    interface_checks,
    network_checks,
    smoke_result,
)
from hvdtrain.launch.preflight.remote import probe_remote
from hvdtrain.launch.preflight.report import ALL_HOSTS, HostCheck, PreflightReport
from hvdtrain.launch.processes import run_bounded


def mpi_smoke_test(plan: Plan, timeout: float, python: str = sys.executable,
                   flavour: str | None = None,
                   environ: Mapping[str, str] | None = None) -> HostCheck:
    """An mpi4py allreduce of (rank + 1) over every rank of the plan: the sum must be
    n(n+1)/2. Proves mpirun starts ranks on every host and they can talk to each other."""
    environ = os.environ if environ is None else environ
    flavour = flavour or detect_mpi_flavour()
    if flavour is None:
        return HostCheck(ALL_HOSTS, "mpi-allreduce", False, "mpirun not found on the launcher",
                         "install OpenMPI (apt-get install openmpi-bin libopenmpi-dev), or "
                         "skip this test with --no-mpi")
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    command = mpirun_command(plan.placement, [python, "-c", SMOKE_PROGRAM], flavour,
                             is_root=is_root, inherit=[n for n in ALWAYS_EXPORT if n in environ])
    by_hand = shlex.join([*command.argv[:command.argv.index(python)], "hostname"])
    try:
        ran = run_bounded(command.argv, timeout, {**environ, **command.env}, grace=5.0)
    except OSError as exc:
        return HostCheck(ALL_HOSTS, "mpi-allreduce", False, f"cannot run mpirun: {exc}",
                         "install OpenMPI, or skip this test with --no-mpi")
    size = plan.placement.size
    if ran.returncode is None:
        return HostCheck(ALL_HOSTS, "mpi-allreduce", False,
                         f"mpirun did not finish within {timeout:g} s",
                         f"try '{by_hand}'; if that works, pin MPI to the common subnet "
                         "(-mca btl_tcp_if_include CIDR -mca oob_tcp_if_include CIDR)")
    ok, detail = smoke_result(ran.stdout, size)
    if ok and ran.returncode == 0:
        return HostCheck(ALL_HOSTS, "mpi-allreduce", True, f"{detail}, {ran.seconds:.1f} s")
    errors = [line.strip() for line in ran.stderr.splitlines()
              if line.strip() and "setpgid" not in line and not line.startswith("---")]
    if "No module named 'mpi4py'" in ran.stderr:
        return HostCheck(ALL_HOSTS, "mpi-allreduce", False, "mpi4py is not installed",
                         f"{python} -m pip install mpi4py (on every host)")
    why = errors[-1] if errors else f"mpirun exited {ran.returncode}"
    return HostCheck(ALL_HOSTS, "mpi-allreduce", False,
                     f"{detail}; mpirun exited {ran.returncode}: {why}",
                     f"try '{by_hand}' to see what MPI says")



def _place_marker(run_dir: str) -> tuple[str | None, list[Path]]:
    """Create ``run_dir`` here if needed and a marker in it: (marker name, created dirs)."""
    path = Path(run_dir)
    created: list[Path] = []
    try:
        for directory in reversed([p for p in (path, *path.parents) if not p.exists()]):
            directory.mkdir()
            created.append(directory)
        marker = f".hvdtrain-preflight-{uuid.uuid4().hex[:12]}"
        (path / marker).write_text(f"{socket.gethostname()}\n")
        return marker, created
    except OSError:
        return None, created


def _remove_marker(run_dir: str, marker: str | None, created: list[Path]) -> None:
    if marker:
        try:
            (Path(run_dir) / marker).unlink()
        except OSError:
            pass
    for directory in reversed(created):
        try:
            directory.rmdir()
        except OSError:
            pass


def run_preflight(plan: Plan, run_dir: str | Path, timeout: float = 20.0,
                  ssh: Sequence[str] = ("ssh",), mpi_smoke: bool = True,
                  mpi_timeout: float | None = None,
                  network_interface: str | None = None) -> PreflightReport:
    """Check every host of ``plan`` (in parallel, each within ``timeout`` seconds), then, when
    all passed, run the MPI smoke test over the plan's placement."""
    start = time.monotonic()
    run_dir = str(Path(run_dir).absolute())
    names = list(dict.fromkeys(h.name for h in plan.hosts))
    marker, created = _place_marker(run_dir)
    notes: list[str] = []
    try:
        reference = probe_module.collect(run_dir, marker, min(10.0, timeout))
        local = [n for n in names if is_local(n)]
        remote = [n for n in names if n not in local]
        results: dict[str, tuple[list[HostCheck], dict[str, Any] | None]] = {}
        if remote:
            with ThreadPoolExecutor(max_workers=min(32, len(remote))) as pool:
                futures = {n: pool.submit(probe_remote, n, run_dir, marker, timeout, ssh)
                           for n in remote}
                results = {n: f.result() for n, f in futures.items()}
        checks: list[HostCheck] = []
        probes: dict[str, dict[str, Any]] = {}
        for name in names:
            if name in local:
                checks.append(HostCheck(name, "resolve", True, "local host: no ssh needed"))
                checks += compare(name, reference, reference)
                probes[name] = reference
                continue
            host_checks, found = results[name]
            checks += host_checks
            if found is not None:
                checks += compare(name, reference, found)
                probes[name] = found
        remote_probes = {n: p for n, p in probes.items() if n in remote}
        checks += network_checks(reference, remote_probes)
        if network_interface:
            checks += interface_checks(network_interface, remote_probes)
        if marker is None:
            notes.append(f"could not write {run_dir} on the launcher: whether hosts share it "
                         "is unknown")
        failed = sorted({c.host for c in checks if not c.ok})
        if not mpi_smoke:
            notes.append("MPI allreduce smoke test skipped (--no-mpi)")
        elif failed:
            notes.append(f"MPI allreduce smoke test not run: checks failed on {', '.join(failed)}")
        else:
            checks.append(mpi_smoke_test(plan, mpi_timeout or max(30.0, 2 * timeout)))
        order = {name: index for index, name in enumerate(names)}
        checks.sort(key=lambda c: order.get(c.host, len(order)))  # stable: by host, then "all"
        shared = {n: (p.get("run_dir") or {}).get("shared") for n, p in probes.items()}
    finally:
        _remove_marker(run_dir, marker, created)
    return PreflightReport(tuple(names), run_dir, tuple(checks), shared, tuple(notes),
                           time.monotonic() - start)
