"""One way to write a file that appears complete or not at all, and to say why it could not.

Files a reader must never see half written (checkpoints, predictions, exported models and their
sidecars, ``summary.json`` and the restart and elastic records, the rank protocol's records,
preflight's good hostfile, benchmark results) go through ``atomic_output``. It is the only
writer that renames over a file (a unit test fails on an ``os.replace`` anywhere else), so a
fixed temporary name, a missing fsync or an in-place rewrite cannot come back one module at a
time. The content goes to a temporary name in the *same directory* (a rename across
filesystems is not atomic), is fsynced, then ``os.replace``d over the target, and the directory
is fsynced so that the rename survives a crash. On any failure the temporary file is removed:
the old file stays, nothing else does. Two fsyncs cost a few milliseconds a file: nothing for
the few records a rank writes per job, and a crash-safe ``summary.json`` is worth it.

A full disk is the usual failure, and the libraries that write for us word it badly (torch:
``basic_ios::clear: iostream error``, with no errno at all). So a failure is judged by the
filesystem, not by the message: an ``OSError`` with ENOSPC/EDQUOT, or any error raised while
the filesystem has (almost) nothing left, is ``OutputError(disk_full=True)`` naming the file,
how far it got and the space left once the partial file is gone; another ``OSError``
(permissions, a read-only filesystem) is an ``OutputError`` with its reason; an
``HvdtrainError`` already says what went wrong, and anything else is a bug: both propagate
unchanged. Callers add what they know (``CheckpointStore``: the last
complete checkpoint to resume from).

The temporary name is unique to the process and the call (ranks of one host, or the rank
wrapper and the supervisor's relay, may write the same target at once) and hidden (``.tmp-``),
and by default does not end in the target's suffix, so neither a checkpoint scan nor a
``*.ckpt`` glob nor the protocol's ``rank-*.json`` finds one that a killed process left;
``keep_suffix`` is for writers that insist on the suffix (Keras' ``.keras``). Standard library
only, in the bottom layer: the launcher, the ranks and the commands all use it.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hvdtrain.errors import HvdtrainError, OutputError

# A write that fails with less than this free was stopped by the full disk, whatever the
# library said (a failing write leaves at most a buffer's worth: KiB, not MiB).
FULL_BELOW = 1 << 20
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_HINT = "free space on that filesystem, or write to another one"
_CALLS = itertools.count()  # next() on it is atomic under the GIL


def temporary_path(path: Path, keep_suffix: bool = False) -> Path:
    unique = f"{os.getpid()}-{next(_CALLS)}"  # two threads of one process never share one
    name = f".tmp-{unique}-{path.name}" if keep_suffix else f".tmp-{path.name}-{unique}"
    return path.with_name(name)


def free_bytes(path: Path) -> int | None:
    """Bytes this user may still write on the filesystem holding ``path`` (or its nearest
    existing parent: a directory not made yet); None when it cannot be told."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _size(path: Path) -> int:
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory; the rename is done either way
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """fsync a file, or every file of a directory output (a SavedModel) and its directories."""
    if not path.is_dir():
        with path.open("rb+") as handle:
            os.fsync(handle.fileno())
        return
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb+") as handle:
                os.fsync(handle.fileno())
        fsync_dir(Path(root))


def _first_line(exc: BaseException) -> str:
    return ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:200]


def write_failure(exc: BaseException, path: Path, written: int = 0,
                  free_at_failure: int | None = None) -> OutputError | None:
    """``exc``, raised while writing ``path``, as the error to report; None for a bug (not an
    ``OSError`` and not a full disk), which should propagate as it is. ``free_at_failure``:
    the bytes free while the partial file still existed (default: now)."""
    if not isinstance(exc, Exception) or isinstance(exc, HvdtrainError):
        return None  # KeyboardInterrupt, SystemExit; an error that already explains itself
    if free_at_failure is None:
        free_at_failure = free_bytes(path.parent)
    full = ((isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS)
            or (free_at_failure is not None and free_at_failure < FULL_BELOW))
    if full:
        free = free_bytes(path.parent)
        if free is not None and free_at_failure is not None:
            # a library may still hold the removed file open (torch does, until its writer is
            # collected): its space comes back then, and is counted as free here
            free = max(free, free_at_failure + written)
        reached = f"the filesystem filled up after {human_bytes(written)}; " if written else ""
        left = (f"{human_bytes(free)} free there without the partial file" if free is not None
                else "free space unknown")
        return OutputError(f"no space left on device writing {path} ({reached}{left})",
                           hint=DISK_FULL_HINT, path=str(path), disk_full=True, free=free)
    if isinstance(exc, OSError):
        reason = exc.strerror or _first_line(exc)
        return OutputError(f"cannot write {path}: {reason}",
                           hint="check that the directory exists and is writable",
                           path=str(path), free=free_bytes(path.parent))
    return None


@contextmanager
def atomic_output(path: Path, keep_suffix: bool = False) -> Iterator[Path]:
    """``with atomic_output(target) as tmp:`` write ``tmp`` (a file, or a directory that
    replaces a directory target whole); on leaving, it becomes ``target``. Failures: see the
    module docstring."""
    tmp = temporary_path(path, keep_suffix)
    try:
        yield tmp
        _fsync_tree(tmp)
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)  # an older directory output: os.replace needs an empty one
        os.replace(tmp, path)
    except BaseException as exc:
        written, free = _size(tmp), free_bytes(path.parent)
        _remove(tmp)
        error = write_failure(exc, path, written, free)
        if error is None:
            raise
        raise error from exc
    fsync_dir(path.parent)


def atomic_write(path: Path, write: Callable[[Path], None], keep_suffix: bool = False) -> None:
    """``write(tmp)`` writes the content; ``path`` appears when it is complete."""
    with atomic_output(path, keep_suffix) as tmp:
        write(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
