"""Checkpoint files: atomic writes, retention, and finding what to resume from.

Framework-free: an adapter serialises its own state into the path it is given; this module
makes that write atomic (temporary file in the same directory, fsync, rename, fsync of the
directory), keeps the last K epoch checkpoints plus ``best.ckpt``, and resolves ``--resume``.
A crash mid-write leaves only a ``.tmp-*`` file behind; the good checkpoints are never touched
before the new one is complete, and a checkpoint that fails to load is never overwritten.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hvdtrain.catalog import FRAMEWORKS
from hvdtrain.errors import CheckpointError
from hvdtrain.types import OfflineFramework

FORMAT = "hvdtrain-checkpoint-1"
_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.ckpt$")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        write(tmp)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


class CheckpointStore:
    def __init__(self, directory: Path, keep: int = 3) -> None:
        self.directory = directory
        self.keep = keep  # validated by TrainConfig (--keep-checkpoints >= 1)

    def epoch_files(self) -> list[tuple[int, Path]]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _EPOCH_FILE.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def save(self, epoch: int, write: Callable[[Path], None], is_best: bool) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"epoch-{epoch:04d}.ckpt"
        atomic_write(path, write)
        if is_best:
            atomic_write(self.directory / "best.ckpt", write)
        for _, old in self.epoch_files()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def resolve(self, resume: str) -> Path:
        """``latest`` (the newest epoch checkpoint here) or an explicit path."""
        if resume == "latest":
            files = self.epoch_files()
            if not files:
                raise CheckpointError(f"--resume latest: no checkpoint in {self.directory}",
                                      hint="give the run directory of the run to resume "
                                      "(--run-dir) or a checkpoint path")
            return files[-1][1]
        path = Path(resume)
        if not path.is_file():
            raise CheckpointError(f"--resume {resume}: no such checkpoint file",
                                  hint="give 'latest' (with --run-dir) or the path of a "
                                  "checkpoints/epoch-NNNN.ckpt file")
        return path


def refuse_to_overwrite(run_dir: Path, resume: str | None) -> None:
    """A fresh run must not replace another run's checkpoints: nothing written is lost."""
    if resume is None and CheckpointStore(run_dir / "checkpoints").epoch_files():
        raise CheckpointError(
            f"{run_dir} already holds checkpoints of another run",
            hint="continue it with --resume latest, or choose a new --run-dir")


def check_compatible(meta: dict[str, object], path: Path, expected: dict[str, object]) -> None:
    """A checkpoint of another format, framework, model or data set is a clear error."""
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an hvdtrain checkpoint (format "
                              f"{meta.get('format')!r}, expected {FORMAT!r})")
    config = meta.get("config")
    for key, want in expected.items():
        have = config.get(key) if isinstance(config, dict) else None
        if have != want:
            raise CheckpointError(f"{path}: checkpoint was made with {key}={have!r}, this run "
                                  f"has {key}={want!r}",
                                  hint=f"resume with --{key.replace('_', '-')} {have}, or "
                                  "start a fresh run in a new --run-dir")


def _first_line(exc: BaseException) -> str:
    return ((str(exc).strip().splitlines() or [exc.__class__.__name__])[0])[:200]


CORRUPT_HINT = ("the file is damaged or not an hvdtrain checkpoint; resume from an older one "
                "(--resume <run-dir>/checkpoints/epoch-NNNN.ckpt)")


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's metadata, checked complete (every zip member's CRC), without importing
    any framework: which framework wrote it is told by its layout (``catalog.FRAMEWORKS``'
    ``checkpoint_marker``), and that framework's ``OfflineFramework.read_meta`` reads it."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            damaged = archive.testzip()
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({_first_line(exc)})",
                              hint=CORRUPT_HINT) from None
    if damaged is not None:
        raise CheckpointError(f"{path}: cannot read checkpoint (member {damaged!r} is damaged)",
                              hint=CORRUPT_HINT)
    for framework in FRAMEWORKS:
        marker = framework.checkpoint_marker
        if any(n == marker or n.endswith("/" + marker) for n in names):
            reader: OfflineFramework = FRAMEWORKS.load(framework.name, "offline")
            try:
                return reader.read_meta(path)
            except CheckpointError as exc:
                raise CheckpointError(exc.message, hint=exc.hint or CORRUPT_HINT) from None
    raise CheckpointError(f"{path}: not an hvdtrain checkpoint (no known layout)",
                          hint=CORRUPT_HINT)
