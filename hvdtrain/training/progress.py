"""Progress on rank 0: a live bar on a terminal, plain lines in a log.

A tqdm bar redraws one line with carriage returns. On a terminal that is a bar; in a file (CI
logs, Slurm output files, ``| tee``, ``kubectl logs``) every redraw stays, as debris like
``epoch 9/10:   0%|          | 0/103 [00:00<?, ?step/s]``. So the bar is drawn only where
the user's stderr is a terminal; elsewhere a plain line is written every ``every`` seconds
(long epochs only) and never a carriage return. The epoch's own line says the rest.

**Whose terminal.** Under hvdtrain's launcher a rank's stderr is always a pipe: the rank
wrapper copies it into ``logs/`` and the supervisor follows that file onto the launcher's
stderr. So a rank cannot ask its own stream; the launcher says whether *its* stderr is a
terminal (``launch.protocol.TERMINAL_ENV``). A rank started some other way (a user's own
mpirun or srun) asks its own stderr, which its launcher's forwarding makes a pipe too.

tqdm is imported only for a bar, and both kinds offer the part of tqdm's interface the
callers use (``update``, ``set_postfix``, ``close``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO, Any, Protocol

from hvdtrain.config import TrainConfig
from hvdtrain.launch.protocol import TERMINAL_ENV

DEFAULT_EVERY_SECONDS = TrainConfig.log_every_seconds  # evaluate and predict use it as is


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True,
                    **kwargs: Any) -> Any: ...

    def close(self) -> Any: ...


def on_terminal(env: Mapping[str, str] | None = None, stream: IO[str] | None = None) -> bool:
    """Whether rank 0's stderr reaches a terminal: the launcher's word, else ``stream``'s."""
    env = os.environ if env is None else env
    said = env.get(TERMINAL_ENV)
    if said is not None:
        return said == "1"
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


class LogProgress:
    """Progress as plain lines, one every ``every`` seconds (none when ``every`` is 0)."""

    def __init__(self, desc: str, total: int | None, unit: str, every: float,
                 stream: IO[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.desc, self.total, self.unit, self.every = desc, total, unit, every
        self.stream, self.clock = stream, clock
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.started = self.last = clock()

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True,
                    **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        finished = self.total is not None and self.n >= self.total  # the caller's line says it
        if self.every > 0 and now - self.last >= self.every and not finished:
            self.last = now
            self.write(now - self.started)

    def write(self, elapsed: float) -> None:
        done = f"{self.n:,}"
        if self.total:
            done += f"/{self.total:,} {self.unit}s ({100 * self.n // self.total}%)"
        else:
            done += f" {self.unit}s"
        details = "".join(f", {key}={value}" for key, value in self.postfix.items())
        try:
            print(f"{self.desc}: {done} in {elapsed:.0f} s{details}", file=self.stream,
                  flush=True)
        except (ValueError, OSError):  # the stream is gone: training goes on without it
            self.every = 0

    def close(self) -> None:
        """Nothing to clear: the lines stay, and the caller prints the result."""


def progress(desc: str, total: int | None, unit: str, every: float = DEFAULT_EVERY_SECONDS,
             env: Mapping[str, str] | None = None, stream: IO[str] | None = None) -> Progress:
    """A tqdm bar on a terminal (``on_terminal``), else ``LogProgress`` on the same stream."""
    stream = sys.stderr if stream is None else stream
    if not on_terminal(env, stream):
        return LogProgress(desc, total, unit, every, stream)
    from tqdm import tqdm

    bar: Progress = tqdm(total=total, desc=desc, unit=unit, file=stream, mininterval=0.5,
                         leave=False, dynamic_ncols=True)
    return bar
