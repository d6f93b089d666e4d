"""What is left of a job after its launcher was killed: the helpers of the "nothing outlives a
killed launcher" tests (tests/distributed/test_killed_launcher.py, and across namespace hosts
tests/multihost/test_killed_launcher.py).

A job's processes are found by a marker, the job's run directory: the rank wrappers carry it
in their argv, and every process the launcher starts inherits it in its environment
(``HVDTRAIN_JOB_DIR``). /proc shows the ranks on the namespace hosts too: those hosts are
network namespaces, not PID namespaces, so they share this machine's process table. What runs
on a host without the marker (its orted, its sshd sessions) is what
``NamespaceHosts.processes()`` lists.

The launcher is killed with SIGKILL, as the OOM killer does: it gets no chance to stop
anything, so whatever ends must end by itself (``PR_SET_PDEATHSIG``, the rank wrapper's
watchdog). The tests wait up to ``GONE_WITHIN_S`` for that, and then remove whatever is left
in a ``finally``, so one failing test does not leave running ranks to the next.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.helpers.jobs import poll_until

GONE_WITHIN_S = 10.0  # the guarantee: nothing of the job after this long
SweepHosts = Callable[[], dict[str, list[str]]]  # host -> "PID COMMAND" of what runs there


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # gone meanwhile, or a kernel thread
        return b""


def _is_zombie(pid: str) -> bool:
    state = _read(Path("/proc", pid, "stat")).rsplit(b")", 1)[-1].split()[:1]
    return state in ([b"Z"], [b"X"])


def marked_processes(marker: str | Path) -> dict[int, str]:
    """pid -> command line of every live process (not this one) whose argv or environment
    contains ``marker``."""
    needle = str(marker).encode()
    found: dict[int, str] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        if int(proc.name) == os.getpid() or _is_zombie(proc.name):
            continue
        cmdline = _read(proc / "cmdline")
        if needle in cmdline or needle in _read(proc / "environ"):
            found[int(proc.name)] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


def start_job(argv: Sequence[str], env: Mapping[str, str], out_dir: Path,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """The launcher in its own session, its output into files (a pipe nobody reads could
    block it, and a closed one would end its children for a reason the OOM killer does not
    give)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "launcher.stdout").open("wb") as out, \
            (out_dir / "launcher.stderr").open("wb") as err:
        return subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def output(out_dir: Path, limit: int = 3000) -> str:
    """The launcher's last output, for a failure message."""
    parts = []
    for name in ("launcher.stdout", "launcher.stderr"):
        text = _read(out_dir / name).decode(errors="replace")
        parts.append(f"--- {name} ---\n{text[-limit:]}")
    return "\n".join(parts)


def wait_for_ranks(directory: Path, size: int, suffix: str, proc: subprocess.Popen[bytes],
                   timeout: float, out_dir: Path) -> None:
    """Until every rank N has written ``directory/rank-N.<suffix>`` (``ranks/``,
    ``ready.json``: Horovod is initialised in hvdtrain's worker). The launcher ending first
    fails the test."""
    wanted = [directory / f"rank-{rank}.{suffix}" for rank in range(size)]
    why = poll_until(lambda: all(path.exists() for path in wanted), proc, timeout)
    if why is not None:
        raise AssertionError(f"not every rank wrote rank-N.{suffix}: {why}\n{output(out_dir)}")


def kill_launcher(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL to the launcher alone (not its process group), as the OOM killer does."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def leftovers(marker: str | Path, hosts: SweepHosts | None = None) -> dict[str, list[str]]:
    """What of the job runs now: the marked processes, and each host's processes."""
    left = {"marked": [f"{pid} {cmd}" for pid, cmd in sorted(marked_processes(marker).items())]}
    if hosts is not None:
        left.update(hosts())
    return left


def leftovers_after(marker: str | Path, hosts: SweepHosts | None = None,
                    within: float = GONE_WITHIN_S) -> dict[str, list[str]]:
    """Wait up to ``within`` seconds for the job to be gone; what is still left then."""
    deadline = time.monotonic() + within
    while True:
        left = leftovers(marker, hosts)
        if not any(left.values()) or time.monotonic() > deadline:
            return {where: procs for where, procs in left.items() if procs}
        time.sleep(0.25)


def remove_leftovers(marker: str | Path, proc: subprocess.Popen[bytes],
                     hosts: SweepHosts | None = None) -> None:
    """SIGKILL whatever of the job is still there (the launcher's group, the marked
    processes, each host's processes), until nothing is: always called in a ``finally``."""
    for _ in range(50):
        pids = set(marked_processes(marker))
        if hosts is not None:
            pids |= {int(line.split()[0]) for procs in hosts().values() for line in procs}
        if proc.poll() is None:
            pids.add(proc.pid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.2)
        if proc.poll() is None:
            try:
                proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
