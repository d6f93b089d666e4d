"""Checkpoint files: atomic writes, retention, and finding what to resume from.

Framework-free: an adapter serialises its own state into the path it is given; this module
makes that write atomic (temporary file in the same directory, fsync, rename, fsync of the
directory), keeps the last K epoch checkpoints plus ``best.ckpt`` and the newest mid-epoch
step checkpoint, and resolves ``--resume``.
A crash mid-write leaves only a ``.tmp-*`` file behind; the good checkpoints are never touched
before the new one is complete, and a checkpoint that fails to load is never overwritten.
A write that fails (a full disk, above all) leaves no partial file and is one
``CheckpointError`` (exit 7) that names the file, the space left and the last complete
checkpoint to ``--resume`` from (``write_failed``); the loop agrees on it across ranks.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hvdtrain.atomic import atomic_write, human_bytes
from hvdtrain.catalog import FRAMEWORKS
from hvdtrain.errors import CheckpointError, OutputError
from hvdtrain.types import OfflineFramework

FORMAT = "hvdtrain-checkpoint-1"
# epoch-0003.ckpt: after 3 whole epochs; epoch-0003-sample-0001200.ckpt: after 3 epochs and
# 1200 samples of the 4th (a step checkpoint; samples, not steps, so the name keeps its order
# across a resume at another world size)
_CHECKPOINT_FILE = re.compile(r"^epoch-(\d+)(?:-sample-(\d+))?\.ckpt$")
RESUME_AUTO = "auto"  # resume if this run directory holds a checkpoint, else start


class CheckpointStore:
    """A run's ``checkpoints/`` directory. "Latest" is the newest *complete* file: a write in
    progress is a ``.tmp-*`` file until its atomic rename, so it is never found here."""

    def __init__(self, directory: Path, keep: int = 3) -> None:
        self.directory = directory
        self.keep = keep  # validated by TrainConfig (--keep-checkpoints >= 1)

    def files(self) -> list[tuple[tuple[int, int], Path]]:
        """Every checkpoint, oldest first, keyed by (whole epochs, samples into the next)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _CHECKPOINT_FILE.match(path.name)
            if match:
                found.append(((int(match.group(1)), int(match.group(2) or 0)), path))
        return sorted(found)

    def epoch_files(self) -> list[tuple[int, Path]]:
        return [(key[0], path) for key, path in self.files() if key[1] == 0]

    def save(self, epoch: int, write: Callable[[Path], None], is_best: bool,
             samples: int = 0) -> Path:
        """Write the checkpoint after ``epoch`` whole epochs (and ``samples`` of the next: a
        step checkpoint). Keeps the last ``keep`` epoch checkpoints and only the newest step
        checkpoint, each removed only after the new file is complete."""
        name = f"epoch-{epoch:04d}" + (f"-sample-{samples:07d}" if samples else "") + ".ckpt"
        path = self.directory / name
        try:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create {self.directory}: "
                                  f"{exc.strerror or exc}") from exc
            atomic_write(path, write)
            if is_best:
                atomic_write(self.directory / "best.ckpt", write)
        except OutputError as exc:
            raise self.write_failed(exc) from None
        for key, old in self.files():
            if key[1] and old != path:
                old.unlink(missing_ok=True)  # older step checkpoints
        for _, old in self.epoch_files()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def latest(self) -> Path | None:
        files = self.files()
        return files[-1][1] if files else None

    def write_failed(self, exc: OutputError) -> CheckpointError:
        """A failed write in this run (a checkpoint, or another file of the run directory) as
        the error every rank raises: what failed, and the newest complete checkpoint."""
        last = self.latest()
        run_dir = self.directory.parent
        if last is None:
            where = "no complete checkpoint yet"
            then = f"start again (or choose a --run-dir elsewhere than {run_dir})"
        else:
            where = f"last complete checkpoint: {last}"
            then = f"continue with: hvdtrain train ... --resume {last} --run-dir {run_dir}"
        if exc.disk_full:
            kept = sum(p.stat().st_size for _, p in self.files() if p.exists())
            best = self.directory / "best.ckpt"
            kept += best.stat().st_size if best.exists() else 0
            fix = (f"free space there (its checkpoints take {human_bytes(kept)}; "
                   "--keep-checkpoints keeps fewer)")
        else:
            fix = "make the run directory writable"
        return CheckpointError(f"{exc.message}; {where}", hint=f"{fix}, then {then}")

    def resolve(self, resume: str) -> Path | None:
        """``latest`` (the newest checkpoint here), ``auto`` (the same, or None when there is
        none: a fresh start) or an explicit path."""
        if resume in ("latest", RESUME_AUTO):
            found = self.latest()
            if found is None and resume == "latest":
                raise CheckpointError(f"--resume latest: no checkpoint in {self.directory}",
                                      hint="give the run directory of the run to resume "
                                      "(--run-dir) or a checkpoint path; --resume auto "
                                      "starts afresh when there is none")
            return found
        path = Path(resume)
        if not path.is_file():
            raise CheckpointError(f"--resume {resume}: no such checkpoint file",
                                  hint="give 'latest' or 'auto' (with --run-dir) or the path "
                                  "of a checkpoints/epoch-NNNN.ckpt file")
        return path


def refuse_to_overwrite(run_dir: Path, resume: str | None) -> None:
    """A fresh run must not replace another run's checkpoints: nothing written is lost."""
    if resume is None and CheckpointStore(run_dir / "checkpoints").files():
        raise CheckpointError(
            f"{run_dir} already holds checkpoints of another run",
            hint="continue it with --resume latest (or auto), or choose a new --run-dir")


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
