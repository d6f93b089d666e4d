"""Start a launcher, watch its ranks, and turn any failure into a root-cause report.

The launcher (horovodrun or mpirun) runs in its own session. Every rank runs under
``rank_wrapper``, which writes its start and exit records into the run directory
(``launch.protocol``). The supervisor polls those records, so it knows, independently of how a
launcher words its errors:

* the **first failing rank** (earliest non-zero exit), its host, exit code and stderr tail;
  the job then exits with that rank's exit code after stopping the others;
* ranks that never started within ``start_timeout`` (a launcher stuck on ssh, a bad host),
  or, for hvdtrain's own workers, never finished ``hvd.init()`` (they report it);
* a job past its wall-clock ``timeout`` or silent past ``idle_timeout`` (no output from any
  rank): a hang becomes a report, never a stuck terminal or CI.

Each of those is one small check that returns a ``JobFailure`` or nothing; the loop runs them
in order and the first answer ends the job.

**One voice on the terminal.** The terminal shows rank 0's own output, followed from its log
files when this machine can see them, and hvdtrain's report; the launcher's banners, abort
messages and crash backtraces (mpirun's own segfault while aborting, too) go to
``launcher.log`` only, and the report mentions that file in one line. Only when rank 0 runs on
a host that does not share the run directory does its output come through the launcher.

**Horovod elastic** (``Watchdog.elastic``): ranks die and are replaced, and their numbers change
on every reset, so a rank's exit ends nothing; horovodrun's exit code (it stops the job below
``--min-np`` after its elastic timeout), the timeouts and a stop request decide. The terminal
shows the same as without elastic: the current rank 0's lines (its worker tells its wrapper
when it is rank 0, ``protocol.claim_voice``), taken from horovodrun's streams without the
``[3]<stdout>:`` tags; horovodrun's own lines go to ``launcher.log``.

SIGINT/SIGTERM to hvdtrain are passed to the launcher's process group and to every recorded
rank, then escalated to SIGKILL after a grace period: no orphans. hvdtrain killed outright
(SIGKILL, the OOM killer) stops nothing itself: the launcher then gets a signal from the kernel
(``launch.lifeline``), and each rank wrapper stops its rank once its launcher is gone.

**Stopping with a checkpoint** (``Watchdog.graceful_stop``, hvdtrain's own workers): the first
SIGTERM or SIGUSR1 is passed on as SIGUSR1 (to the ranks here, and through mpirun, which
forwards it, to the others); the ranks agree to stop at their next step, rank 0 writes a step
checkpoint and every rank exits 75 (``ExitCode.STOPPED``), which the job then exits with. A
second signal, Ctrl-C, or ``stop_timeout`` without the ranks done stops them at once. A user's
own program (``Watchdog.forward_stop``, ``hvdtrain launch``) gets the same SIGUSR1 and the same
deadline; what it does with it is its own (docs/FAULT_TOLERANCE.md: checkpoint, exit 75).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from hvdtrain.errors import ConfigError, ExitCode, LaunchError
from hvdtrain.launch import failures
from hvdtrain.launch.argv import LaunchCommand
from hvdtrain.launch.failures import JobFailure
from hvdtrain.launch.lifeline import die_with_parent, launcher_death_signal
from hvdtrain.launch.network import is_local
from hvdtrain.launch.processes import alive, signal_group, signal_process
from hvdtrain.launch.protocol import RankExit, RunLayout, relay_status
from hvdtrain.launch.streams import start_follow, start_pump
from hvdtrain.log import logger

LAUNCHER_EXIT_GRACE = 2.0  # seconds for wrappers to write exit records after the launcher ends


@dataclass(frozen=True)
class Watchdog:
    start_timeout: float = 120.0
    timeout: float | None = None
    idle_timeout: float | None = None
    require_ready: bool = False  # start-up ends at Horovod init (hvdtrain workers report it)
    grace: float = 10.0
    poll_interval: float = 0.2
    # hvdtrain workers: SIGTERM/SIGUSR1 means "stop at the next step with a checkpoint", given
    # ``stop_timeout`` seconds (below the 30 s Slurm, Kubernetes and podman give by default)
    graceful_stop: bool = False
    stop_timeout: float = 20.0
    # a user's own program (``hvdtrain launch``): SIGTERM/SIGUSR1 is passed on to every rank
    # as SIGUSR1 in the same way; the program decides what it means (checkpoint, exit 75)
    forward_stop: bool = False
    # Horovod elastic: ranks die and are replaced, and rank numbers change on a reset, so a
    # rank's exit decides nothing; horovodrun's exit code, the timeouts and stops decide
    elastic: bool = False

    def __post_init__(self) -> None:
        for flag, value in (("--start-timeout", self.start_timeout), ("--timeout", self.timeout),
                            ("--idle-timeout", self.idle_timeout),
                            ("--stop-timeout", self.stop_timeout)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{flag} must be > 0 seconds, got {value:g}")


@dataclass(frozen=True)
class JobResult:
    run_dir: Path
    ranks: tuple[RankExit, ...]
    wall_seconds: float


class _Supervisor:
    def __init__(self, command: LaunchCommand, size: int, layout: RunLayout, watchdog: Watchdog,
                 env: Mapping[str, str], report: TextIO | None) -> None:
        self.command, self.size, self.layout = command, size, layout
        self.watchdog, self.env, self.report = watchdog, env, report
        self.proc: subprocess.Popen[bytes] | None = None
        self.tee: threading.Thread | None = None
        self.relay: threading.Thread | None = None
        self.launcher_speaks = threading.Event()  # echo the launcher's streams (remote rank 0)
        self.done_following = threading.Event()
        self.followers: list[threading.Thread] = []
        self.followed_ranks: set[int] = set()
        self.interrupted: int | None = None
        self.stop_signal: int | None = None  # a graceful stop asked for, not yet passed on
        self.stop_deadline: float | None = None  # ...passed on; the ranks have until then
        self.began = 0.0
        self.launcher_gone_at: float | None = None

    def say(self, text: str) -> None:
        """A warning while the job runs: to ``report`` when the caller gave one, else the
        ``hvdtrain`` logger."""
        if self.report is None:
            logger.warning("%s", text)
        else:
            print(f"hvdtrain: {text}", file=self.report, flush=True)

    def report_failure(self, text: str) -> None:
        """The failure report, with the error it ends in: shown at every level."""
        print(text, file=self.report or sys.stderr, flush=True)

    # -- stopping ------------------------------------------------------------------------
    def _pids(self) -> list[int]:
        """Rank processes on this machine (a pid from another host means nothing here; the
        launcher stops those)."""
        return [pid for start in self.layout.starts().values() if is_local(start.host)
                for pid in (start.pid, start.child_pid)]

    def _signal_all(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            signal_group(self.proc.pid, sig)
        for start in self.layout.starts().values():
            if not is_local(start.host):
                continue
            # hvdtrain's workers take SIGTERM as "stop at the next step": a hard stop kills
            # them (their wrappers still record how they ended)
            worker_sig = signal.SIGKILL if self.watchdog.graceful_stop else sig
            for pid, how in ((start.child_pid, worker_sig), (start.pid, sig)):
                signal_process(pid, how)

    def _ask_to_stop(self) -> None:
        """Pass a graceful stop on as SIGUSR1: to the workers here, and to mpirun, which
        forwards SIGUSR1 to every rank (horovodrun would die of it: its remote ranks learn of
        the stop from the others, whose agreement is a collective)."""
        for start in self.layout.starts().values():
            if is_local(start.host):
                signal_process(start.child_pid, signal.SIGUSR1)
        launcher = Path(self.command.argv[0]).name
        if launcher.startswith("mpirun") and self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)

    def _anything_alive(self) -> bool:
        launcher_alive = self.proc is not None and self.proc.poll() is None
        return launcher_alive or any(alive(pid) for pid in self._pids())

    def stop_all(self) -> None:
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.watchdog.grace
        while time.monotonic() < deadline and self._anything_alive():
            time.sleep(0.1)
        if self._anything_alive():
            self._signal_all(signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=self.watchdog.grace)
            except subprocess.TimeoutExpired:
                pass
        for thread in (self.tee, self.relay):  # the launcher's last words before our report
            if thread is not None:
                thread.join(timeout=2)

    # -- the checks, in order: each returns the job's outcome or None ----------------------
    def check_interrupted(self, _exits: list[RankExit]) -> JobFailure | None:
        if self.interrupted is None:
            return None
        name = signal.Signals(self.interrupted).name
        self.say(f"{name} received, stopping all ranks")
        return failures.interrupted(name, self.interrupted)

    def check_stop_requested(self, exits: list[RankExit]) -> JobFailure | None:
        """A graceful stop: pass it on once, then give the ranks ``stop_timeout``."""
        if self.stop_signal is not None and self.stop_deadline is None:
            name = signal.Signals(self.stop_signal).name
            timeout = self.watchdog.stop_timeout
            what = ("every rank stops at its next step and rank 0 writes a checkpoint"
                    if self.watchdog.graceful_stop else "passed on to every rank as SIGUSR1")
            self.say(f"{name} received: {what} (up to {timeout:g} s; a second signal stops "
                     "at once)")
            self.stop_deadline = time.monotonic() + timeout
            self._ask_to_stop()
        if self.stop_deadline is not None and time.monotonic() > self.stop_deadline:
            name = signal.Signals(self.stop_signal or signal.SIGTERM).name
            return failures.timed_out(
                self.layout, f"the ranks did not stop within {self.watchdog.stop_timeout:g} s "
                f"of {name}", self._running(exits))
        return None

    def check_stopped(self, exits: list[RankExit]) -> JobFailure | None:
        """A rank exits 75 only after rank 0's checkpoint is complete (every rank waited for
        it in a collective): the job stopped as asked, whatever the other ranks' last moments
        (mpirun may end rank 0 before its own exit record when another rank leaves first)."""
        rank_zero = next((e for e in exits if e.rank == 0), None)
        if rank_zero and not self.watchdog.elastic and rank_zero.exit_code != ExitCode.STOPPED:
            return None  # rank 0 ended otherwise (elastic renumbers ranks): not a stop
        if not any(e.exit_code == ExitCode.STOPPED for e in exits):
            return None
        return failures.stopped(self.layout, self.stop_signal,
                                own_program=self.watchdog.forward_stop)

    def check_rank_failed(self, exits: list[RankExit]) -> JobFailure | None:
        if self.watchdog.elastic:
            return None  # horovodrun replaces or drops it; its own exit code tells the end
        failed = next((e for e in exits if e.exit_code != 0), None)
        if failed is None:
            return None
        if (self.watchdog.forward_stop and self.stop_signal is not None
                and signal.SIGUSR1 in (failed.signal, failed.exit_code - 128)):
            # a program without a SIGUSR1 handler ends on the stop passed on to it: the stop
            # the user asked for (128 + their signal), not a failing rank
            name = signal.Signals(self.stop_signal).name
            self.say(f"the program ended on the SIGUSR1 its ranks were sent for {name} "
                     "(it does not handle SIGUSR1)")
            return failures.interrupted(name, self.stop_signal)
        if any(e.exit_code == ExitCode.STOPPED for e in exits) and all(e.rank != 0 for e in exits):
            # stopping on request: rank 0 is finishing the checkpoint; mpirun may meanwhile
            # end the others by a signal. Give rank 0 its time before calling this a failure.
            self.stop_deadline = self.stop_deadline or (
                time.monotonic() + self.watchdog.stop_timeout)
            if time.monotonic() < self.stop_deadline:
                return None
        return failures.rank_failed(self.layout, failed.rank, failed.host, failed.exit_code,
                                    failed.signal, failed.logs)

    def check_launcher_exited(self, exits: list[RankExit]) -> JobFailure | JobResult | None:
        assert self.proc is not None  # started by run(); not user input
        code = self.proc.poll()
        if code is None:
            return None
        if len(exits) == self.size and not self.watchdog.elastic:
            return JobResult(self.layout.root, tuple(exits), time.monotonic() - self.began)
        self.launcher_gone_at = self.launcher_gone_at or time.monotonic()
        if time.monotonic() - self.launcher_gone_at < LAUNCHER_EXIT_GRACE:
            return None  # the wrappers may still be writing their exit records
        if self.watchdog.elastic:
            if code == 0:  # however many ranks came and went
                return JobResult(self.layout.root, tuple(exits), time.monotonic() - self.began)
            return failures.elastic_failed(self.layout, code)
        return failures.launcher_failed(self.layout, self.command.argv[0], code, len(exits),
                                        self.size)

    def check_started(self, _exits: list[RankExit]) -> JobFailure | None:
        wd = self.watchdog
        if time.monotonic() - self.began <= wd.start_timeout:
            return None
        done = self.layout.ready() if wd.require_ready else set(self.layout.starts())
        if wd.elastic and done:
            return None  # the job formed; later ranks come and go under horovodrun's timeout
        missing = sorted(set(range(self.size)) - done)
        if not missing:
            return None
        what = "initialise Horovod" if wd.require_ready else "start"
        return failures.not_started(missing, what, wd.start_timeout)

    def check_timeout(self, exits: list[RankExit]) -> JobFailure | None:
        timeout = self.watchdog.timeout
        if timeout is None or time.monotonic() - self.began <= timeout:
            return None
        return failures.timed_out(self.layout, f"the job ran past its {timeout:g} s timeout",
                                  self._running(exits))

    def check_idle(self, exits: list[RankExit]) -> JobFailure | None:
        idle = self.watchdog.idle_timeout
        starts = self.layout.starts()
        if idle is None or len(starts) < self.size:
            return None
        last = max(self.layout.last_output_time(), *(s.time for s in starts.values()))
        if time.time() - last <= idle:
            return None
        return failures.timed_out(self.layout, f"no rank wrote any output for {idle:g} s",
                                  self._running(exits))

    def _running(self, exits: list[RankExit]) -> list[int]:
        return sorted(set(self.layout.starts()) - {e.rank for e in exits})

    # -- the terminal ----------------------------------------------------------------------
    def _choose_voice(self) -> None:
        """Once rank 0 has started: follow its log files here, or, when this machine cannot
        see them (another host, no shared run directory), let the launcher's streams speak.
        Elastic: rank 0 changes on a reset, so the launcher's streams speak instead (only
        the current rank 0's wrapper echoes; ``run`` strips horovodrun's tags)."""
        if self.watchdog.elastic:
            return  # run() lets the launcher's streams speak
        while not self.done_following.is_set():
            if 0 in self.layout.starts():
                break
            self.done_following.wait(0.1)
        else:
            return
        if self.layout.stderr_log(0).exists():
            self.followed_ranks.add(0)
            self.followers = [
                start_follow(self.layout.stdout_log(0), getattr(sys.stdout, "buffer", None),
                             self.done_following),
                start_follow(self.layout.stderr_log(0), getattr(sys.stderr, "buffer", None),
                             self.done_following)]
        else:
            self.launcher_speaks.set()

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> JobResult:
        self.layout.prepare()
        self.began = time.monotonic()
        launcher_log = self.layout.launcher_log.open("wb")
        me, death = os.getpid(), launcher_death_signal(self.command.argv[0])
        try:
            # Its own session keeps a terminal's Ctrl-C ours to pass on; the death signal
            # stops it (and so every rank, on every host) when hvdtrain is killed outright
            # (``launch.lifeline``)
            self.proc = subprocess.Popen(self.command.argv, env={**self.env, **self.command.env},
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         start_new_session=True,
                                         preexec_fn=lambda: die_with_parent(death, me))
        except FileNotFoundError as exc:
            launcher_log.close()
            raise LaunchError(f"launcher {self.command.argv[0]!r} not found",
                              hint="run 'hvdtrain env' to see what is installed") from exc
        # The launcher's streams go to launcher.log; its stdout also carries the ranks' status
        # records (hosts may not share the run directory). Both reach the terminal only when
        # rank 0's own log files cannot be followed here.
        stdout, stderr = (getattr(stream, "buffer", None) for stream in (sys.stdout, sys.stderr))
        if self.watchdog.elastic:
            # horovodrun tags every rank's line; only the current rank 0's wrapper echoes.
            # Its lines are shown untagged, horovodrun's own go to launcher.log only.
            self.tee = threading.Thread(target=relay_status, args=(
                self.proc.stderr, self.layout, stderr, launcher_log, None, True), daemon=True)
            self.tee.start()
        else:
            self.tee = start_pump(self.proc.stderr, launcher_log, stderr, self.launcher_speaks)
        self.relay = threading.Thread(
            target=relay_status, args=(self.proc.stdout, self.layout, stdout, launcher_log,
                                       None if self.watchdog.elastic else self.launcher_speaks,
                                       self.watchdog.elastic), daemon=True)
        self.relay.start()
        voice = threading.Thread(target=self._choose_voice, daemon=True)
        voice.start()
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        asks_to_stop = self.watchdog.graceful_stop or self.watchdog.forward_stop

        def on_signal(signum: int, _frame: object) -> None:
            graceful = asks_to_stop and signum != signal.SIGINT
            if graceful and self.stop_signal is None:
                self.stop_signal = signum  # check_stop_requested passes it on
            elif signum == signal.SIGUSR1 and not asks_to_stop:
                self._ask_to_stop()  # a user's own program decides what SIGUSR1 means
            elif signum != signal.SIGUSR1:
                self.interrupted = signum

        previous[signal.SIGUSR1] = signal.getsignal(signal.SIGUSR1)
        for sig in previous:
            signal.signal(sig, on_signal)
        try:
            outcome = self._watch()
            if isinstance(outcome, JobFailure):
                self.stop_all()  # still under our handlers: a second Ctrl-C cannot cut it short
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.done_following.set()
        for thread in [voice, *self.followers]:
            thread.join(timeout=5)
        if isinstance(outcome, JobFailure) and outcome.kind != "stopped":  # a stop: one line
            outcome = outcome.with_tails(self.layout, shown=self.followed_ranks)
            self.report_failure(outcome.format())
            if not self.launcher_speaks.is_set():
                self.report_failure(f"hvdtrain: the launcher's own messages are in "
                                    f"{self.layout.launcher_log}")
        self.tee.join(timeout=5)
        self.relay.join(timeout=5)
        launcher_log.close()
        if isinstance(outcome, JobFailure):
            raise outcome.as_error()
        return outcome

    def _watch(self) -> JobFailure | JobResult:
        checks: list[Callable[[list[RankExit]], JobFailure | JobResult | None]] = [
            self.check_interrupted, self.check_stop_requested, self.check_stopped,
            self.check_rank_failed, self.check_launcher_exited,
            self.check_started, self.check_timeout, self.check_idle]
        while True:
            time.sleep(self.watchdog.poll_interval)
            exits = self.layout.exits()
            for check in checks:
                outcome = check(exits)
                if outcome is not None:
                    return outcome


def run_job(command: LaunchCommand, size: int, layout: RunLayout,
            watchdog: Watchdog | None = None, env: Mapping[str, str] | None = None,
            report: TextIO | None = None) -> JobResult:
    """Run ``command`` (whose program is already wrapped) and supervise its ``size`` ranks.
    ``report``: where its warnings and a failure report go (default: the ``hvdtrain`` logger,
    and stderr for the failure report)."""
    return _Supervisor(command, size, layout, watchdog or Watchdog(),
                       os.environ if env is None else env, report).run()
