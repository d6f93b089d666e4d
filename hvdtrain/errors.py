"""Errors that teach: every user mistake is an ``HvdtrainError`` with a hint.

The CLI turns these into one line (plus the hint) and a distinct exit code, never a
traceback. Library code raises them; ``assert`` is never used to check input.

Exit codes live in one table, ``ExitCode``: each error class names its member, and the
launcher side (``launch.failures``, preflight, the restart policy) uses the same members, so a
code means one thing everywhere. A failed rank's own code is passed on (``RankFailedError``).
Codes 6-9 and 75 are raised by ranks as well as by the launcher side, so a job whose ranks all
diverged exits 8 like a single rank would.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit status hvdtrain chooses, with the words the README's list uses for it.

    An ``IntEnum`` so that a member *is* its number: ``sys.exit``, JSON and comparisons with
    the codes a rank or a launcher reported see plain ints, and no user-visible code changed
    when the literals became members. A test checks the README's list against ``label``.
    Not in the table, because hvdtrain does not choose them: a failed rank's own code (passed
    on), a launcher's own code, and 128 + N for a job stopped by signal N (as a shell says).

    75 is ``EX_TEMPFAIL`` (try again later): a job stopped on request (SIGUSR1/SIGTERM, e.g.
    Slurm preemption) after writing a checkpoint, so a requeued job continues with ``--resume
    auto``. 7 also covers a full disk during training (the run's state is its checkpoints); 9
    any other file hvdtrain writes (predictions, an exported model).
    """

    label: str

    # ``label`` defaults only so that ``ExitCode(5)`` (a lookup by value) type-checks
    def __new__(cls, value: int, label: str = "") -> ExitCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.label = label
        return member

    def __str__(self) -> str:
        """The number, as on Python 3.11+ (3.10's IntEnum says ``ExitCode.DATA``)."""
        return str(self.value)

    ENV_PROBLEMS = 1, "hvdtrain env found a problem"
    CONFIG = 2, "options/config"
    HOSTS = 3, "hosts/placement"
    LAUNCH = 4, "launch"
    PREFLIGHT = 5, "preflight"
    DATA = 6, "data"
    CHECKPOINT = 7, "checkpoint"
    DIVERGED = 8, "training diverged"
    OUTPUT = 9, "an output file could not be written"
    STOPPED = 75, "stopped on request"
    TIMEOUT = 124, "timeout"  # like coreutils' timeout(1)
    NOT_STARTED = 125, "never started"
    CANNOT_START = 127, "a rank's command could not start"  # like a shell's "not found"


class HvdtrainError(Exception):
    """Base of every error hvdtrain reports to a user."""

    exit_code: int = ExitCode.CONFIG

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

    exit_code = ExitCode.HOSTS

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        super().__init__("; ".join(problems) if problems else "invalid hosts", hint)
        self.problems = problems


class PlacementError(HvdtrainError):
    """Hosts are fine, but the requested placement does not fit them."""

    exit_code = ExitCode.HOSTS


class LaunchError(HvdtrainError):
    """A launcher could not be built or started."""

    exit_code = ExitCode.LAUNCH


class PreflightError(LaunchError):
    """A host of a multi-host plan failed the checks made before launching on it."""

    exit_code = ExitCode.PREFLIGHT


class RankFailedError(HvdtrainError):
    """A rank exited non-zero; ``exit_code`` is that rank's exit code."""

    def __init__(self, message: str, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


class DataError(HvdtrainError):
    """A data set that cannot be read or used."""

    exit_code = ExitCode.DATA


class CheckpointError(HvdtrainError):
    """A checkpoint that cannot be read, or does not belong to this run."""

    exit_code = ExitCode.CHECKPOINT


class OutputError(HvdtrainError):
    """A file hvdtrain writes could not be written (a full disk, no permission); the partial
    file is gone (``hvdtrain.atomic``). ``disk_full``: the filesystem filled up; ``free``: the
    bytes left there once the partial file was removed (None: unknown)."""

    exit_code = ExitCode.OUTPUT

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

    exit_code = ExitCode.DIVERGED


class TrainingStoppedError(HvdtrainError):
    """Every rank stopped at the same step because one was asked to (SIGUSR1 or SIGTERM), and
    rank 0 wrote a step checkpoint first: nothing trained so far is lost."""

    exit_code = ExitCode.STOPPED
