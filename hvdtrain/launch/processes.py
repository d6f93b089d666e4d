"""Starting, bounding and stopping child processes: the launcher's helpers, written once.

Every child the launcher may have to stop (mpirun or horovodrun, ``ssh`` to a host, the
preflight's ``mpirun``, a copy of results, the model check) runs in a session, so a process
group, of its own, and is stopped as a group: killing only the child would leave its children
(``sh -c``'s, mpirun's daemons, ssh's proxy command) running and holding its pipes, so
``communicate()`` would wait on them for ever. A process or group that is already gone when
it is signalled is no error: a stop races the exit it is meant to cause, and either way the
process is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Ran:
    """What a bounded command did: its exit status, its output, and how long it took."""

    returncode: int | None  # None: killed at the deadline
    stdout: str
    stderr: str
    seconds: float


def signal_group(pgid: int, sig: int) -> None:
    """``sig`` to every process of the group ``pgid`` (a session leader's pid), if any."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_process(pid: int, sig: int) -> None:
    """``sig`` to the process ``pid``, if it is still there and ours to signal."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie child of ours counts as gone; a process
    we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def run_bounded(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None,
                grace: float = 0.0) -> Ran:
    """Run ``argv`` without stdin in its own process group; at ``timeout`` the group gets
    SIGTERM (when ``grace``, so mpirun can stop its remote daemons), then SIGKILL."""
    start = time.monotonic()
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(env) if env is not None else None)
    try:
        out, err = proc.communicate(timeout=max(0.1, timeout))
        return Ran(proc.returncode, out, err, time.monotonic() - start)
    except subprocess.TimeoutExpired:
        if grace > 0:
            signal_group(proc.pid, signal.SIGTERM)
            try:
                out, err = proc.communicate(timeout=grace)
                return Ran(None, out, err, time.monotonic() - start)
            except subprocess.TimeoutExpired:
                pass
        signal_group(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return Ran(None, out, err, time.monotonic() - start)
    except BaseException:
        signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
