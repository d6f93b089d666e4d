"""Nothing of a job outlives its launcher: how a process follows its parent when the parent
dies without a word (SIGKILL, the OOM killer), on any host.

* ``die_with_parent``, where the parent is ours: the supervisor starts the launcher (mpirun,
  horovodrun) in a session of its own, so no signal for hvdtrain's terminal reaches it, and a
  launcher that writes nothing never meets the broken pipe of a dead hvdtrain (measured:
  mpirun and horovodrun, and so every rank on every host, kept running after hvdtrain's
  SIGKILL). ``PR_SET_PDEATHSIG`` makes the kernel signal the child when its parent dies;
  ``launcher_death_signal`` says which signal each launcher gets. The rank wrapper asks the
  same for the rank it starts.
* ``watch_launcher``, where the parent is not ours: a rank wrapper's parent is orted, horovodrun's
  middleman or a remote shell under sshd. Killing one of those signals the wrapper, which
  passes SIGTERM on to its rank, and a training rank answers SIGTERM by stopping at its next
  step, in a collective with ranks that may already be gone (measured: a rank on another host
  still running 10 s after horovodrun's ssh session ended). So the wrapper watches what ties
  it to its launcher: its parent pid (a changed parent: the old one died) and its stdout, the
  pipe or ssh channel the launcher reads, which reports an error once nobody can read it any
  more (a parent may outlive its connection). When either goes, the rank gets SIGTERM and,
  ``LOST_GRACE`` seconds later, SIGKILL.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1
try:  # looked up here, not between fork and exec, where loading a library could deadlock
    _PRCTL: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: best effort only
    _PRCTL = None
LOST_GRACE = 4.0  # seconds from SIGTERM to SIGKILL once the launcher is gone
POLL_INTERVAL = 0.5


def die_with_parent(sig: int, parent: int | None = None) -> None:
    """Ask the kernel for ``sig`` when this process's parent dies (Linux; elsewhere nothing).
    Given the ``parent`` pid it expects, a parent that died before the request also counts.

    Meant for ``preexec_fn`` and for a process's own start. The signal follows the death of
    the *thread* that forked, so the parent forks from a thread that lives as long as it does
    (the main thread)."""
    if _PRCTL is None:
        return
    _PRCTL(PR_SET_PDEATHSIG, sig)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)


def launcher_death_signal(program: str) -> int:
    """The signal the launcher ``program`` gets when hvdtrain dies.

    mpirun (Open MPI, Hydra): SIGTERM, which it answers by stopping its ranks and its daemons
    on every host (measured: nothing left 2-3 s after hvdtrain's SIGKILL). horovodrun: SIGKILL.
    It starts each rank under a middleman process that stops the rank's shell or ssh session
    when horovodrun dies for any reason, while its own SIGTERM handling is slower: under
    ``--elastic`` it was measured still running 10 s later, its ranks already gone."""
    return signal.SIGKILL if Path(program).name.startswith("horovodrun") else signal.SIGTERM


def output_closed(fd: int) -> bool:
    """Whether nobody can read what is written to ``fd`` any more (a pipe's or socket's
    reader is gone: POLLERR/POLLHUP on the writing end). Files and terminals never are."""
    poller = select.poll()
    poller.register(fd, 0)  # errors and hang-ups are reported whatever was asked
    try:
        events = poller.poll(0)
    except OSError:
        return True
    return any(ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, ev in events)


def launcher_lost(parent: int, fd: int | None) -> str | None:
    """Why this process has lost its launcher, or None while it has not."""
    if os.getppid() != parent:
        return f"its parent (pid {parent}) is gone"
    if fd is not None and output_closed(fd):
        return "its output channel to the launcher is closed"
    return None


def watch_launcher(stop_child: Callable[[int], None], child_done: Callable[[], bool],
                   on_lost: Callable[[str], None] | None = None, fd: int | None = 1,
                   grace: float = LOST_GRACE, interval: float = POLL_INTERVAL
                   ) -> threading.Thread:
    """A daemon thread that, once this process has lost its launcher (``launcher_lost``),
    stops the child: ``stop_child(SIGTERM)``, then ``stop_child(SIGKILL)`` after ``grace``
    seconds unless ``child_done()``. It ends when the child is done."""
    parent = os.getppid()

    def watch() -> None:
        while not child_done():
            why = launcher_lost(parent, fd)
            if why is not None:
                break
            time.sleep(interval)
        else:
            return
        if on_lost is not None:
            on_lost(why)
        stop_child(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if child_done():
                return
            time.sleep(0.1)
        stop_child(signal.SIGKILL)

    thread = threading.Thread(target=watch, name="launcher-watch", daemon=True)
    thread.start()
    return thread
