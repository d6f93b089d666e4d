"""Errors that teach: every user mistake is an ``HvdtrainError`` with a hint.

The CLI turns these into one line (plus the hint) and a distinct exit code, never a
traceback. Library code raises them; ``assert`` is never used to check input.

Exit codes: 2 options/config (``ConfigError``), 3 hosts and placement, 4 launcher, 5 preflight
failed, 6 data (``DataError``), 7 checkpoint (``CheckpointError``; also a full disk during
training: the run's state is its checkpoints), 8 training diverged (``TrainingDivergedError``),
9 an output file could not be written (``OutputError``: predictions, an exported model, a full
disk); a failed rank's own code is passed on (``RankFailedError``), 124
job timeout, 125 ranks did not start; 75 (``EX_TEMPFAIL``: try again later) a job stopped on
request (SIGUSR1/SIGTERM, e.g. Slurm preemption) after writing a checkpoint, so a requeued job
continues with ``--resume auto``. Codes 6-9 and 75 are raised by ranks as well as by the
launcher side, so a job whose ranks all diverged exits 8 like a single rank would.
"""

from __future__ import annotations


class HvdtrainError(Exception):
    """Base of every error hvdtrain reports to a user."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(HvdtrainError):
    """Bad options or config file."""


class HostfileError(HvdtrainError):
    """A hostfile, host string or allocation that cannot be used."""

    exit_code = 3

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        super().__init__("; ".join(problems) if problems else "invalid hosts", hint)
        self.problems = problems


class PlacementError(HvdtrainError):
    """Hosts are fine, but the requested placement does not fit them."""

    exit_code = 3


class LaunchError(HvdtrainError):
    """A launcher could not be built or started."""

    exit_code = 4


class PreflightError(LaunchError):
    """A host of a multi-host plan failed the checks made before launching on it."""

    exit_code = 5


class RankFailedError(HvdtrainError):
    """A rank exited non-zero; ``exit_code`` is that rank's exit code."""

    def __init__(self, message: str, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


class DataError(HvdtrainError):
    """A data set that cannot be read or used."""

    exit_code = 6


class CheckpointError(HvdtrainError):
    """A checkpoint that cannot be read, or does not belong to this run."""

    exit_code = 7


class OutputError(HvdtrainError):
    """A file hvdtrain writes could not be written (a full disk, no permission); the partial
    file is gone (``hvdtrain.atomic``). ``disk_full``: the filesystem filled up; ``free``: the
    bytes left there once the partial file was removed (None: unknown)."""

    exit_code = 9

    def __init__(self, message: str, hint: str | None = None, *, path: str | None = None,
                 disk_full: bool = False, free: int | None = None) -> None:
        super().__init__(message, hint)
        self.path = path
        self.disk_full = disk_full
        self.free = free


class TrainingDivergedError(HvdtrainError):
    """The loss (or the synchronised gradient, or the parameters) became NaN or infinite.

    Raised on every rank at the same step (decided from a value identical on every rank), so
    the job ends cleanly; the newest checkpoint is the last good one."""

    exit_code = 8


EXIT_STOPPED = 75


class TrainingStoppedError(HvdtrainError):
    """Every rank stopped at the same step because one was asked to (SIGUSR1 or SIGTERM), and
    rank 0 wrote a step checkpoint first: nothing trained so far is lost."""

    exit_code = EXIT_STOPPED
