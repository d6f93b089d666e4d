"""A lab's teardown that runs exactly once, however the test session ends.

A session fixture that starts something outside pytest (network-namespace hosts, Slurm daemons,
containers) registers its teardown three ways: as the fixture's finalizer (which pytest also
runs after Ctrl-C), with ``atexit`` (pytest killed between tests), and, by turning SIGTERM (CI
cancelling the job) into KeyboardInterrupt, so that pytest stops the session and still runs the
finalizers. Whichever comes first tears down; the others find it done.
"""

from __future__ import annotations

import atexit
import signal
import threading
from collections.abc import Callable

import pytest


class RunOnce:
    """``fn`` at most once, from whichever caller gets here first. Thread-safe (atexit and a
    signal may race a finalizer): a second caller waits until the first one's ``fn`` has
    finished, then returns without running it again. A failing ``fn`` counts as run."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def __call__(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = True
            self._fn()


def _sigterm_as_keyboard_interrupt() -> None:
    """SIGTERM would end the process without finalizers or atexit handlers. As
    KeyboardInterrupt, pytest stops the session and still runs the finalizers (a SystemExit
    would only fail the current test). Left alone if someone installed a handler already."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def _on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _on_sigterm)


def register_teardown(request: pytest.FixtureRequest, fn: Callable[[], None]) -> RunOnce:
    """Run ``fn`` once when ``request``'s fixture is torn down, at interpreter exit, or after
    SIGTERM, whichever comes first. Register it *before* starting what it tears down, so that a
    half-started lab (or Ctrl-C while it starts) is removed too."""
    once = RunOnce(fn)
    request.addfinalizer(once)
    atexit.register(once)
    _sigterm_as_keyboard_interrupt()
    return once
