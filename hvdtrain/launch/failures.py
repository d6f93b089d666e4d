"""A failed job as a value: what went wrong first, and the report that explains it.

Like torchrun's ``ChildFailedError``, the supervisor does not print and raise from seven
places: each of its checks returns a ``JobFailure`` (or nothing), the supervisor stops the
job, attaches the log tails (``with_tails``, once every process has said its last words) and
prints ``format()``; the CLI then shows ``as_error()`` as one line, a hint and the exit code.
The same value will carry failures reported over a launcher's channel when hosts share no
filesystem.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, replace
from typing import Literal

from hvdtrain.errors import ExitCode, RankFailedError
from hvdtrain.launch.protocol import RunLayout, tail

TAIL_LINES = 15
SHORT_TAIL_LINES = 8
MAX_RANKS_SHOWN = 4

# What ended the job. A Literal, not a free string: a policy that compares kinds (the
# restart policy's final ones) is type-checked against this list.
FailureKind = Literal["rank", "launcher", "not-started", "timeout", "interrupted", "stopped"]


@dataclass(frozen=True)
class JobFailure:
    kind: FailureKind
    headline: str  # the report's first line
    message: str  # the one-line error
    exit_code: int
    hint: str | None = None
    # where it failed, when known: what a restart (``train_launcher.restarts``) needs to decide
    rank: int | None = None
    host: str | None = None
    killed_by: int | None = None
    ranks: tuple[int, ...] = ()  # ranks that did not start (not-started)
    show_ranks: tuple[int, ...] = ()  # whose stderr tails belong in the report
    show_launcher: bool = False
    tail_lines: int = TAIL_LINES
    footer: str | None = None
    tails: tuple[tuple[str, str], ...] = ()  # (whose, text), filled by with_tails

    def with_tails(self, layout: RunLayout, shown: set[int] | frozenset[int] = frozenset()
                   ) -> JobFailure:
        """Attach the stderr tails: from the local log, else (a rank on a host that does not
        share the run directory) from the tail its exit record carried. Ranks in ``shown``
        already had their stderr on the terminal: it is not repeated."""
        relayed = {e.rank: e.stderr_tail for e in layout.exits()}
        found = [(f"rank {rank} stderr", tail(layout.stderr_log(rank), self.tail_lines)
                  or relayed.get(rank, ""))
                 for rank in self.show_ranks[:MAX_RANKS_SHOWN] if rank not in shown]
        if self.show_launcher:
            found.append(("the launcher's output", tail(layout.launcher_log, self.tail_lines)))
        return replace(self, tails=tuple((whose, text) for whose, text in found if text))

    def format(self) -> str:
        lines = [f"hvdtrain: {self.headline}"] if self.headline else []
        for whose, text in self.tails:
            lines.append(f"--- last lines of {whose} ---\n{text}\n---")
        if self.footer:
            lines.append(f"hvdtrain: {self.footer}")
        return "\n".join(lines)

    def as_error(self) -> JobFailedError:
        return JobFailedError(self)


class JobFailedError(RankFailedError):
    """The CLI's one-line error, still carrying the ``JobFailure`` it came from."""

    def __init__(self, failure: JobFailure) -> None:
        super().__init__(failure.message, failure.exit_code, hint=failure.hint)
        self.failure = failure


def rank_failed(layout: RunLayout, rank: int, host: str, exit_code: int,
                killed_by: int | None, logs: str = "") -> JobFailure:
    """``logs``: ``host:path`` of the rank's logs when they are not in ``layout``."""
    how = f"killed by signal {killed_by}" if killed_by else f"exit code {exit_code}"
    local = layout.stderr_log(rank).exists() or not logs
    return JobFailure(
        "rank", f"rank {rank} on {host} failed first ({how})",
        f"rank {rank} on {host} failed with exit code {exit_code}", exit_code,
        hint=f"see {layout.stderr_log(rank) if local else f'{logs}/rank-{rank}.err'}",
        rank=rank, host=host, killed_by=killed_by, show_ranks=(rank,),
        footer=f"all rank logs are in {layout.logs_dir}" if local
        else f"rank logs stay on their hosts ({logs} and alike)")


def launcher_failed(layout: RunLayout, launcher: str, code: int, finished: int,
                    size: int) -> JobFailure:
    return JobFailure(
        "launcher", f"the launcher ({launcher}) exited with code {code} before every rank "
        "finished", f"launcher exited with code {code}; {finished} of {size} ranks finished",
        code or ExitCode.NOT_STARTED, hint=f"see {layout.launcher_log}", show_launcher=True)


# horovodrun 0.28's words when slots stay below --min-np ("Timed out waiting for {activity}.
# Please check that you have enough resources to run at least N Horovod processes.")
ELASTIC_SLOTS_TIMEOUT = "enough resources to run at least"
ELASTIC_RESET_LIMIT = "reset limit"


def elastic_failed(layout: RunLayout, code: int) -> JobFailure:
    """horovodrun ended an elastic job: too few hosts for ``--elastic-timeout`` (below
    ``--min-np``), ``--reset-limit`` reached, or every rank failed. Checkpoints are written
    atomically by rank 0, so the newest one is intact whatever ended the job."""
    said = tail(layout.launcher_log, 400)
    resume = f"hvdtrain train ... --resume latest --run-dir {layout.root}"
    if ELASTIC_SLOTS_TIMEOUT in said:
        match = re.search(r"at least (\d+) Horovod processes", said)
        need = f" {match.group(1)}" if match else ""
        message = (f"elastic: fewer than --min-np{need} slots left, and none came back within "
                   "--elastic-timeout; the job stopped")
    elif ELASTIC_RESET_LIMIT in said.lower():
        message = "elastic: --reset-limit reached (too many membership changes); job stopped"
    else:
        message = f"elastic: horovodrun ended the job with exit code {code}"
    return JobFailure(
        "launcher", message, message, code or ExitCode.NOT_STARTED,
        hint=f"the last checkpoint is intact: resume with {resume} (see {layout.launcher_log})",
        show_launcher=True, tail_lines=SHORT_TAIL_LINES)


def not_started(missing: list[int], what: str, start_timeout: float) -> JobFailure:
    message = f"ranks {missing} did not {what} within {start_timeout:g} s"
    return JobFailure(
        "not-started", f"{message}; stopped the job", message, ExitCode.NOT_STARTED,
        hint="check that every host is reachable, has hvdtrain installed, and that "
        "--network-interface names a working interface; raise --start-timeout if slow",
        ranks=tuple(missing), show_ranks=tuple(missing), show_launcher=True,
        tail_lines=SHORT_TAIL_LINES)


def timed_out(layout: RunLayout, why: str, running: list[int]) -> JobFailure:
    return JobFailure(
        "timeout", f"{why}; ranks still running: {running}; stopped them",
        f"{why} (ranks still running: {running})", ExitCode.TIMEOUT,
        hint=f"rank logs are in {layout.logs_dir}", show_ranks=tuple(running),
        tail_lines=SHORT_TAIL_LINES)


def interrupted(signal_name: str, signum: int) -> JobFailure:
    return JobFailure("interrupted", f"stopped all ranks after {signal_name}",
                      f"stopped by {signal_name}", 128 + signum)


def stopped(layout: RunLayout, signum: int | None, own_program: bool = False) -> JobFailure:
    """Every rank stopped at the same step on request; rank 0 wrote a checkpoint first (and
    said which, on the terminal): no report beyond the one line. ``own_program``: a user's
    program (``hvdtrain launch``) exited 75: what it saved is its own business."""
    why = f"on {signal.Signals(signum).name} " if signum else "on request "
    if own_program:
        return JobFailure(
            "stopped", "", f"the program stopped {why}(exit code 75)", ExitCode.STOPPED,
            hint="run the same command again to continue (your program resumes from its own "
            "checkpoint)")
    return JobFailure(
        "stopped", "", f"every rank stopped {why}at the same step, after rank 0 wrote a "
        "checkpoint", ExitCode.STOPPED,
        hint=f"continue with --resume auto --run-dir {layout.root}")
