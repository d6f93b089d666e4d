"""Copying a child's output as it comes: into a log file, and optionally on to our own stream.

Used by the rank wrapper (each rank's stdout/stderr into ``logs/``, rank 0's also shown) and
by the supervisor (the launcher's stderr into ``launcher.log`` and onto the terminal).
"""

from __future__ import annotations

import threading
from typing import IO


def pump(source: IO[bytes] | None, log: IO[bytes], echo: IO[bytes] | None = None) -> None:
    """Copy ``source`` to ``log`` (and ``echo``) chunk by chunk until it closes."""
    if source is None:
        return
    for chunk in iter(lambda: source.read1(65536), b""):  # type: ignore[attr-defined]
        log.write(chunk)
        log.flush()
        if echo is not None:
            try:
                echo.write(chunk)
                echo.flush()
            except (ValueError, OSError):  # our own stream went away: keep logging
                echo = None


def start_pump(source: IO[bytes] | None, log: IO[bytes],
               echo: IO[bytes] | None = None) -> threading.Thread:
    thread = threading.Thread(target=pump, args=(source, log, echo), daemon=True)
    thread.start()
    return thread
