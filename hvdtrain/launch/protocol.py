"""The rank protocol, in one place: the run directory's layout, its file formats, and the
variables that carry it to the ranks.

Both sides use this module: the writers (``rank_wrapper`` for start and exit, the training
worker for "Horovod is initialised") and the reader (``supervisor``), so a path or a field
cannot be spelled two ways. Layout of a run directory::

    launch.json             the exact argv and environment the launcher was started with
    launcher.log            the launcher's own output (rank 0's stderr passes through it too)
    ranks/rank-N.start.json {rank, host, pid, child_pid, time}   written by the rank wrapper
    ranks/rank-N.ready.json {rank, time}                         written by the worker
    ranks/rank-N.exit.json  {rank, host, exit_code, signal, time} written by the rank wrapper
    logs/rank-N.out, .err   every rank's stdout and stderr

**No shared filesystem needed.** A rank's host may not see the launcher's run directory (a
Kubernetes MPIJob, a login node with local disks): the rank wrapper and the worker still write
these records under the same path *on their own host*, and the wrapper also prints each record
as one ``STATUS_MARKER`` line on its stdout, which every launcher forwards to the supervisor
anyway. The supervisor's relay (``relay_status``) writes them into its own view of the layout,
so the reader works the same whether the directory is shared or not. An exit record carries
the tail of the rank's stderr and where its logs are, for the failure report.

The variables are deliberately not ``HVDTRAIN_<OPTION>`` names: those are the option mirrors
(``HVDTRAIN_RUN_DIR`` sets ``--run-dir``), and the protocol must not depend on one happening to
match the other.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from hvdtrain.atomic import atomic_write_text
from hvdtrain.errors import ConfigError
from hvdtrain.log import LEVEL_ENV

JOB_DIR_ENV = "HVDTRAIN_JOB_DIR"  # the run directory the launcher chose (absolute)
PLAN_ENV = "HVDTRAIN_PLAN"  # the placement, as ``cluster.pinning.encode_plan`` writes it
# Gloo across hosts: the launcher's address the hosts reach (``launch.network``); the rank
# wrapper gives it to Horovod in place of the one horovodrun guessed.
RENDEZVOUS_ENV = "HVDTRAIN_RENDEZVOUS_ADDR"
# --network-interface given as a network (CIDR): each host's wrapper picks its interface in it.
NETWORK_ENV = "HVDTRAIN_NETWORK"
# ``train``'s options as the launcher resolved them (defaults < file < environment < flags,
# paths made absolute): a rank on another host has neither the launcher's environment nor its
# files, so it takes these instead of re-resolving its own (``rank_options``).
RANK_OPTIONS_ENV = "HVDTRAIN_RANK_OPTIONS"
# "1": the launcher's stderr, where rank 0's output is shown, is a terminal (a rank's own is a
# pipe to its wrapper): rank 0 draws progress bars only then (``training.progress``).
TERMINAL_ENV = "HVDTRAIN_LAUNCHER_TTY"
# For a user's own program (``launch --max-restarts``), to resume from its own checkpoint:
# which attempt this is (0 = the first launch, N = the Nth restart) and the ranks it has
# (a restart on fewer hosts has fewer; not set for --elastic, whose size changes as it runs).
ATTEMPT_ENV = "HVDTRAIN_ATTEMPT"
WORLD_SIZE_ENV = "HVDTRAIN_WORLD_SIZE"
# (and ``log.LEVEL_ENV``: -v/-q, the level of the ranks' messages, when not the default)
PROTOCOL_VARIABLES = (JOB_DIR_ENV, PLAN_ENV, RENDEZVOUS_ENV, NETWORK_ENV, RANK_OPTIONS_ENV,
                      TERMINAL_ENV, ATTEMPT_ENV, WORLD_SIZE_ENV, LEVEL_ENV)

WRAPPER_MODULE = "hvdtrain.launch.rank_wrapper"
STATUS_MARKER = b"@@hvdtrain-rank-status@@ "  # starts a record line on a launcher's stdout
# Horovod elastic renumbers ranks on every reset: after each one the worker says on its stdout
# and stderr whether it is rank 0 now, and its wrapper echoes its output only while it is
VOICE_MARKER = b"@@hvdtrain-voice@@ "
# how horovodrun forwards a rank's line: ``[3]<stdout>:text`` (a line without it is its own)
LAUNCHER_TAG = re.compile(rb"\[\d+\]<std(?:out|err)>:")
EVENTS = ("start", "ready", "exit")


@dataclass(frozen=True)
class RankStart:
    rank: int
    host: str
    pid: int
    child_pid: int
    time: float


@dataclass(frozen=True)
class RankExit:
    rank: int
    host: str
    exit_code: int
    signal: int | None
    time: float
    stderr_tail: str = ""  # the end of the rank's stderr, for a report made on another host
    logs: str = ""  # host:path of the rank's log files


def status_line(event: str, record: Mapping[str, object]) -> bytes:
    """One record as a line for the launcher's stdout (``relay_status`` reads it back)."""
    return STATUS_MARKER + json.dumps({"event": event, **record}).encode() + b"\n"


def split_status(line: bytes) -> tuple[bytes, dict[str, object] | None]:
    """(text to pass on, record or None). Launchers may prefix forwarded lines (horovodrun:
    ``[1]<stdout>:``); such a prefix before a record is dropped."""
    at = line.find(STATUS_MARKER)
    if at < 0:
        return line, None
    try:
        record = json.loads(line[at + len(STATUS_MARKER):])
    except ValueError:
        return line, None
    before = line[:at]
    keep = b"" if before.strip() == b"" or before.rstrip().endswith(b">:") else before + b"\n"
    return keep, record if isinstance(record, dict) else None


def encode_rank_options(options: Mapping[str, object]) -> str:
    """The value of ``RANK_OPTIONS_ENV``: one compact JSON object, keys sorted (the dry run,
    ``launch.json`` and the ranks see the same text)."""
    return json.dumps(dict(options), sort_keys=True, separators=(",", ":"))


def rank_options(env: Mapping[str, str]) -> dict[str, object] | None:
    """The options the launcher resolved for this rank, or None when a user's own launcher
    started it (it then parses its command line, as any program would)."""
    value = env.get(RANK_OPTIONS_ENV)
    if not value:
        return None
    try:
        options = json.loads(value)
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise ConfigError(f"{RANK_OPTIONS_ENV} is not the JSON object hvdtrain's launcher "
                          "writes", hint=f"unset {RANK_OPTIONS_ENV} when starting ranks yourself")
    return options


def terminal_environment(stream: IO[str] | None = None) -> dict[str, str]:
    """``TERMINAL_ENV`` for the ranks when the launcher's stderr (``stream``) is a terminal;
    nothing otherwise (a rank then asks its own stderr: a pipe under every launcher)."""
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return {TERMINAL_ENV: "1"} if tty else {}


def voice_line(speaks: bool) -> bytes:
    return VOICE_MARKER + (b"1" if speaks else b"0") + b"\n"


def split_voice(line: bytes) -> tuple[bytes, bool | None]:
    """(text to pass on, whether the rank speaks from now on or None when the line does not
    say): the rank wrapper's side of ``claim_voice``."""
    at = line.find(VOICE_MARKER)
    if at < 0:
        return line, None
    before = line[:at]
    return (before + b"\n" if before else b""), line[at + len(VOICE_MARKER):].strip() == b"1"


def claim_voice(speaks: bool, env: Mapping[str, str] | None = None) -> None:
    """Horovod elastic, in the worker after each reset: tell this rank's wrapper whether it is
    rank 0 now (it alone is shown, as without elastic). Only under hvdtrain's launcher: a
    user's own horovodrun would show the line."""
    env = os.environ if env is None else env
    if JOB_DIR_ENV not in env:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
            stream.buffer.write(voice_line(speaks))
            stream.buffer.flush()
        except (AttributeError, ValueError, OSError):
            pass


def untag(line: bytes) -> bytes | None:
    """A rank's line as horovodrun forwarded it without horovodrun's tag; None for a line of
    horovodrun's own."""
    found = LAUNCHER_TAG.match(line)
    return line[found.end():] if found else None


def _write_json(path: Path, payload: Mapping[str, object]) -> None:
    atomic_write_text(path, json.dumps(payload))  # readers never see half a file


def _read_json(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _rank_of(path: Path) -> int | None:
    """``rank-12.exit.json`` → 12."""
    number = path.name.split(".")[0].removeprefix("rank-")
    return int(number) if number.isdigit() else None


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a text file ('' when it is missing)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RunLayout | None:
        """The layout a launcher handed to this rank, or None when started by hand."""
        value = env.get(JOB_DIR_ENV)
        return cls(Path(value)) if value else None

    # -- paths ----------------------------------------------------------------------------
    @property
    def ranks_dir(self) -> Path:
        return self.root / "ranks"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def launcher_log(self) -> Path:
        return self.root / "launcher.log"

    @property
    def launch_record(self) -> Path:
        return self.root / "launch.json"

    def status_file(self, rank: int, event: str) -> Path:
        return self.ranks_dir / f"rank-{rank}.{event}.json"

    def stdout_log(self, rank: int) -> Path:
        return self.logs_dir / f"rank-{rank}.out"

    def stderr_log(self, rank: int) -> Path:
        return self.logs_dir / f"rank-{rank}.err"

    # -- the launcher's side ----------------------------------------------------------------
    def environment(self, encoded_plan: str, rendezvous_address: str | None = None,
                    network: str | None = None) -> dict[str, str]:
        """The variables every rank of this job receives."""
        env = {JOB_DIR_ENV: str(self.root), PLAN_ENV: encoded_plan}
        if rendezvous_address:
            env[RENDEZVOUS_ENV] = rendezvous_address
        if network:
            env[NETWORK_ENV] = network
        return env

    def wrap(self, program: list[str]) -> list[str]:
        """``program`` run under the rank wrapper, which writes this layout's status files."""
        return [sys.executable, "-m", WRAPPER_MODULE, str(self.root), "--", *program]

    def prepare(self) -> None:
        """Create the directories and forget the status files of an earlier job here."""
        self.ranks_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.ranks_dir.glob("rank-*.json"):
            stale.unlink()

    def record_launch(self, argv: list[str], env: Mapping[str, str]) -> None:
        _write_json(self.launch_record, {"argv": argv, "env": dict(env)})

    # -- the writers (rank wrapper, worker) ---------------------------------------------------
    def write_start(self, start: RankStart) -> None:
        _write_json(self.status_file(start.rank, "start"), asdict(start))

    def write_ready(self, rank: int) -> None:
        _write_json(self.status_file(rank, "ready"), {"rank": rank, "time": time.time()})

    def write_exit(self, done: RankExit) -> None:
        _write_json(self.status_file(done.rank, "exit"), asdict(done))

    def write_record(self, event: str, record: Mapping[str, object]) -> None:
        """A record relayed from a rank's host (see ``split_status``)."""
        rank = record.get("rank")
        if event in EVENTS and isinstance(rank, int):
            self.ranks_dir.mkdir(parents=True, exist_ok=True)
            _write_json(self.status_file(rank, event), {k: v for k, v in record.items()
                                                        if k != "event"})

    # -- the reader (supervisor) ------------------------------------------------------------
    def _records(self, event: str) -> list[dict[str, object]]:
        found = []
        for path in self.ranks_dir.glob(f"rank-*.{event}.json"):
            data = _read_json(path) if _rank_of(path) is not None else None
            if data is not None:
                found.append(data)
        return found

    def starts(self) -> dict[int, RankStart]:
        return {int(str(d["rank"])): RankStart(int(str(d["rank"])), str(d["host"]),
                                               int(str(d["pid"])), int(str(d["child_pid"])),
                                               float(str(d["time"])))
                for d in self._records("start")}

    def ready(self) -> set[int]:
        return {int(str(d["rank"])) for d in self._records("ready")}

    def exits(self) -> list[RankExit]:
        """Finished ranks, earliest first (the first failure is the root cause)."""
        found = [RankExit(int(str(d["rank"])), str(d["host"]), int(str(d["exit_code"])),
                          None if d.get("signal") is None else int(str(d["signal"])),
                          float(str(d["time"])), str(d.get("stderr_tail", "")),
                          str(d.get("logs", "")))
                 for d in self._records("exit")]
        return sorted(found, key=lambda e: (e.time, e.rank))

    def last_output_time(self) -> float:
        """When any rank last wrote to its logs (0 when none has)."""
        times = [p.stat().st_mtime for p in self.logs_dir.glob("rank-*.*") if p.is_file()]
        return max(times, default=0.0)



def relay_status(source: IO[bytes] | None, layout: RunLayout, passthrough: IO[bytes] | None,
                 log: IO[bytes] | None = None, gate: threading.Event | None = None,
                 ranks_only: bool = False) -> None:
    """The supervisor's side of the stdout channel: records into ``layout``; every other line
    into ``log`` and on to ``passthrough`` while ``gate`` is open (or always, without one),
    until ``source`` closes. ``ranks_only`` (horovodrun elastic): only the ranks' lines go on,
    without horovodrun's tags; its own lines go to ``log`` alone."""
    if source is None:
        return
    for line in iter(source.readline, b""):
        text, record = split_status(line)
        if record is not None:
            layout.write_record(str(record.get("event")), record)
        if not text:
            continue
        shown: bytes | None = untag(text) if ranks_only else text
        speak = bool(shown) and (gate is None or gate.is_set())
        for sink, data in ((passthrough if speak else None, shown), (log, text)):
            if sink is None or not data:
                continue
            try:
                sink.write(data)
                sink.flush()
            except (ValueError, OSError):
                pass
