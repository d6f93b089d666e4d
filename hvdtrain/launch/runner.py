"""Start a launcher, watch its ranks, and turn any failure into a root-cause report.

The launcher (horovodrun or mpirun) runs in its own session. Every rank runs under
``rank_wrapper``, which writes ``ranks/rank-N.start.json`` and ``ranks/rank-N.exit.json``
into the run directory. This module polls those files, so it knows, independently of how a
launcher words its errors:

* the **first failing rank** (earliest non-zero exit), its host, exit code and stderr tail;
  the job then exits with that rank's exit code after stopping the others;
* ranks that never started within ``start_timeout`` (a launcher stuck on ssh, a bad host),
  or, for hvdtrain's own workers, never finished ``hvd.init()`` (they report it);
* a job past its wall-clock ``timeout`` or silent past ``idle_timeout`` (no output from any
  rank): a hang becomes a report, never a stuck terminal or CI.

SIGINT/SIGTERM to hvdtrain are passed to the launcher's process group and to every
recorded rank, then escalated to SIGKILL after a grace period: no orphans.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from hvdtrain.errors import LaunchError, RankFailedError
from hvdtrain.launch.commands import LaunchCommand

EXIT_TIMEOUT = 124  # like coreutils' timeout(1)
EXIT_NOT_STARTED = 125
STDERR_TAIL_LINES = 15


@dataclass(frozen=True)
class Watchdog:
    start_timeout: float = 120.0
    timeout: float | None = None
    idle_timeout: float | None = None
    require_ready: bool = False  # start-up ends at Horovod init (hvdtrain workers report it)
    grace: float = 10.0
    poll_interval: float = 0.2


@dataclass(frozen=True)
class RankExit:
    rank: int
    host: str
    exit_code: int
    signal: int | None
    time: float


@dataclass(frozen=True)
class JobResult:
    run_dir: Path
    ranks: tuple[RankExit, ...]
    wall_seconds: float


def wrap_program(run_dir: Path, program: list[str]) -> list[str]:
    return [sys.executable, "-m", "hvdtrain.launch.rank_wrapper", str(run_dir), "--", *program]


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


class _Supervisor:
    def __init__(self, command: LaunchCommand, size: int, run_dir: Path, watchdog: Watchdog,
                 env: Mapping[str, str], report: TextIO) -> None:
        self.command, self.size, self.run_dir = command, size, run_dir
        self.watchdog, self.env, self.report = watchdog, env, report
        self.status_dir, self.log_dir = run_dir / "ranks", run_dir / "logs"
        self.proc: subprocess.Popen[bytes] | None = None
        self.tee: threading.Thread | None = None
        self.interrupted: int | None = None

    # -- files written by the wrappers ---------------------------------------------------
    def started(self) -> dict[int, dict[str, object]]:
        found = {}
        for path in self.status_dir.glob("rank-*.start.json"):
            data = _read_json(path)
            if data is not None:
                found[int(str(data["rank"]))] = data
        return found

    def ready(self) -> set[int]:
        """Ranks that reported Horovod initialised (``rank_wrapper.mark_ready``)."""
        return {int(p.name.split("-")[1].split(".")[0])
                for p in self.status_dir.glob("rank-*.ready.json")}

    def exits(self) -> list[RankExit]:
        found = []
        for path in self.status_dir.glob("rank-*.exit.json"):
            data = _read_json(path)
            if data is not None:
                found.append(RankExit(int(str(data["rank"])), str(data["host"]),
                                      int(str(data["exit_code"])),
                                      None if data.get("signal") is None
                                      else int(str(data["signal"])),
                                      float(str(data["time"]))))
        return sorted(found, key=lambda e: (e.time, e.rank))

    def last_output_time(self) -> float:
        times = [p.stat().st_mtime for p in self.log_dir.glob("rank-*.*") if p.is_file()]
        return max(times, default=0.0)

    # -- stopping ------------------------------------------------------------------------
    def _signal_all(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        for data in self.started().values():
            for key in ("pid", "child_pid"):
                pid = data.get(key)
                if isinstance(pid, int):
                    try:
                        os.kill(pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass

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
        if self.tee is not None:  # let the launcher's last words out before our report
            self.tee.join(timeout=2)

    def _anything_alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is None:
            return True
        for data in self.started().values():
            for key in ("pid", "child_pid"):
                pid = data.get(key)
                if isinstance(pid, int) and _alive(pid):
                    return True
        return False

    # -- reporting -----------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(text, file=self.report, flush=True)

    def report_rank_failure(self, failed: RankExit) -> None:
        how = (f"killed by signal {failed.signal}" if failed.signal
               else f"exit code {failed.exit_code}")
        self.say(f"hvdtrain: rank {failed.rank} on {failed.host} failed first ({how})")
        tail = _tail(self.log_dir / f"rank-{failed.rank}.err")
        if tail:
            self.say(f"--- last lines of rank {failed.rank} stderr ---\n{tail}\n---")
        self.say(f"hvdtrain: all rank logs are in {self.log_dir}")

    def report_launcher_failure(self, code: int) -> None:
        self.say(f"hvdtrain: the launcher ({self.command.argv[0]}) exited with code {code} "
                 f"before every rank finished")
        tail = _tail(self.run_dir / "launcher.log")
        if tail:
            self.say(f"--- last lines of the launcher's output ---\n{tail}\n---")

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> JobResult:
        self.status_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.status_dir.glob("rank-*.json"):  # a previous job in this run dir
            stale.unlink()
        began = time.monotonic()
        launcher_log = (self.run_dir / "launcher.log").open("wb")
        env = {**self.env, **self.command.env}
        try:
            self.proc = subprocess.Popen(self.command.argv, env=env, stdout=None,
                                         stderr=subprocess.PIPE, start_new_session=True)
        except FileNotFoundError as exc:
            launcher_log.close()
            raise LaunchError(f"launcher {self.command.argv[0]!r} not found",
                              hint="run 'hvdtrain env' to see what is installed") from exc
        # The launcher's stderr carries rank 0's (progress bar, warnings): show it and keep it.
        self.tee = threading.Thread(target=_tee, args=(self.proc.stderr, launcher_log),
                                    daemon=True)
        self.tee.start()

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum: int, _frame: object) -> None:
            self.interrupted = signum

        for sig in previous:
            signal.signal(sig, on_signal)
        try:
            return self._watch(began)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.tee.join(timeout=5)
            launcher_log.close()

    def _watch(self, began: float) -> JobResult:
        assert self.proc is not None  # set by run(); not user input
        wd = self.watchdog
        launcher_gone = 0.0
        while True:
            time.sleep(wd.poll_interval)
            elapsed = time.monotonic() - began
            exits = self.exits()
            failed = next((e for e in exits if e.exit_code != 0), None)
            if self.interrupted is not None:
                name = signal.Signals(self.interrupted).name
                self.say(f"hvdtrain: {name} received, stopping all ranks")
                self.stop_all()
                raise RankFailedError(f"stopped by {name}", 128 + self.interrupted)
            if failed is not None:
                self.stop_all()
                self.report_rank_failure(failed)
                raise RankFailedError(
                    f"rank {failed.rank} on {failed.host} failed with exit code "
                    f"{failed.exit_code}", failed.exit_code,
                    hint=f"see {self.log_dir / f'rank-{failed.rank}.err'}")
            code = self.proc.poll()
            if code is not None:
                if len(exits) == self.size:
                    return JobResult(self.run_dir, tuple(exits), elapsed)
                # The launcher is gone: give the wrappers a moment to write their exit files.
                launcher_gone = launcher_gone or time.monotonic()
                if time.monotonic() - launcher_gone < 2.0:
                    continue
                self.stop_all()
                self.report_launcher_failure(code)
                raise RankFailedError(
                    f"launcher exited with code {code}; {len(exits)} of {self.size} ranks "
                    f"finished", code or EXIT_NOT_STARTED,
                    hint=f"see {self.run_dir / 'launcher.log'}")
            started = self.started()
            ready = self.ready() if wd.require_ready else set(started)
            if len(ready) < self.size and elapsed > wd.start_timeout:
                self._not_started(sorted(set(range(self.size)) - ready))
            if wd.timeout is not None and elapsed > wd.timeout:
                self._timeout(f"the job ran past its {wd.timeout:g} s timeout")
            if wd.idle_timeout is not None and len(started) == self.size:
                quiet = time.time() - max(self.last_output_time(),
                                          max(float(str(d["time"])) for d in started.values()))
                if quiet > wd.idle_timeout:
                    self._timeout(f"no rank wrote any output for {wd.idle_timeout:g} s")

    def _not_started(self, missing: list[int]) -> None:
        what = "initialise Horovod" if self.watchdog.require_ready else "start"
        self.stop_all()
        self.say(f"hvdtrain: ranks {missing} did not {what} within "
                 f"{self.watchdog.start_timeout:g} s; stopped the job")
        for rank in missing[:4]:
            tail = _tail(self.log_dir / f"rank-{rank}.err", 8)
            if tail:
                self.say(f"--- last lines of rank {rank} stderr ---\n{tail}\n---")
        tail = _tail(self.run_dir / "launcher.log", 8)
        if tail:
            self.say(f"--- last lines of the launcher's output ---\n{tail}\n---")
        raise RankFailedError(
            f"ranks {missing} did not {what} within {self.watchdog.start_timeout:g} s",
            EXIT_NOT_STARTED,
            hint="check that every host is reachable, has hvdtrain installed, and that "
            "--network-interface names a working interface; raise --start-timeout if slow")

    def _timeout(self, why: str) -> None:
        running = sorted(set(self.started()) - {e.rank for e in self.exits()})
        self.say(f"hvdtrain: {why}; ranks still running: {running}; stopping them")
        self.stop_all()
        for rank in running[:4]:
            tail = _tail(self.log_dir / f"rank-{rank}.err", 8)
            if tail:
                self.say(f"--- last lines of rank {rank} stderr ---\n{tail}\n---")
        raise RankFailedError(f"{why} (ranks still running: {running})", EXIT_TIMEOUT,
                              hint=f"rank logs are in {self.log_dir}")


def _tee(source: IO[bytes] | None, log: IO[bytes]) -> None:
    if source is None:
        return
    for chunk in iter(lambda: source.read1(65536), b""):  # type: ignore[attr-defined]
        log.write(chunk)
        log.flush()
        try:
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
        except (AttributeError, ValueError, OSError):  # no real stderr (e.g. CliRunner)
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def run_job(command: LaunchCommand, size: int, run_dir: Path, watchdog: Watchdog | None = None,
            env: Mapping[str, str] | None = None, report: TextIO | None = None) -> JobResult:
    """Run ``command`` (whose program is already wrapped) and supervise its ``size`` ranks."""
    return _Supervisor(command, size, run_dir, watchdog or Watchdog(),
                       os.environ if env is None else env, report or sys.stderr).run()
