"""Copying output as it comes: a child's pipes into log files, and log files onto a terminal.

Used by the rank wrapper (each rank's stdout/stderr into ``logs/``, rank 0's also echoed for a
launcher to forward) and by the supervisor (the launcher's streams into ``launcher.log``, and
rank 0's log files followed onto the terminal). An optional ``gate`` holds an echo back until
it is set: the supervisor decides which one source speaks on the terminal. Under Horovod elastic
the rank itself says, in band, when it speaks (``pump_lines``): its rank number changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO


def _write(sink: IO[bytes] | None, data: bytes) -> bool:
    """Write and flush; False when the sink is gone (keep going without it)."""
    if sink is None:
        return False
    try:
        sink.write(data)
        sink.flush()
    except (ValueError, OSError):
        return False
    return True


def pump(source: IO[bytes] | None, log: IO[bytes], echo: IO[bytes] | None = None,
         gate: threading.Event | None = None) -> None:
    """Copy ``source`` to ``log`` (and to ``echo`` while ``gate`` is open) until it closes."""
    if source is None:
        return
    for chunk in iter(lambda: source.read1(65536), b""):  # type: ignore[attr-defined]
        _write(log, chunk)
        if echo is not None and (gate is None or gate.is_set()) and not _write(echo, chunk):
            echo = None


def start_pump(source: IO[bytes] | None, log: IO[bytes], echo: IO[bytes] | None = None,
               gate: threading.Event | None = None) -> threading.Thread:
    thread = threading.Thread(target=pump, args=(source, log, echo, gate), daemon=True)
    thread.start()
    return thread


def pump_lines(source: IO[bytes] | None, log: IO[bytes], echo: IO[bytes] | None,
               control: Callable[[bytes], tuple[bytes, bool | None]], speaking: bool) -> None:
    """``pump`` line by line, echoing only while ``speaking``: ``control`` splits each line
    into the text to copy and None, or whether to echo from the next line on (a line that
    says so is the source's word to its reader, never copied)."""
    if source is None:
        return
    for line in iter(source.readline, b""):
        text, turn = control(line)
        if text:
            _write(log, text)
            if speaking and echo is not None and not _write(echo, text):
                echo = None
        if turn is not None:
            speaking = turn


def start_pump_lines(source: IO[bytes] | None, log: IO[bytes], echo: IO[bytes] | None,
                     control: Callable[[bytes], tuple[bytes, bool | None]],
                     speaking: bool) -> threading.Thread:
    thread = threading.Thread(target=pump_lines, args=(source, log, echo, control, speaking),
                              daemon=True)
    thread.start()
    return thread


def follow(path: Path, sink: IO[bytes] | None, stop: threading.Event,
           poll_interval: float = 0.1) -> None:
    """Copy what is appended to ``path`` onto ``sink`` (like ``tail -f``) until ``stop`` is
    set, then copy the rest once more and return."""
    handle = None
    try:
        while True:
            finished = stop.is_set()
            if handle is None and path.exists():
                handle = path.open("rb")
            if handle is not None:
                chunk = handle.read()
                if chunk and not _write(sink, chunk):
                    sink = None
            if finished:
                return
            stop.wait(poll_interval)
    finally:
        if handle is not None:
            handle.close()


def start_follow(path: Path, sink: IO[bytes] | None, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=follow, args=(path, sink, stop), daemon=True)
    thread.start()
    return thread
