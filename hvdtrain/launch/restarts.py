"""Restart-based fault tolerance for any job: ``--max-restarts N [--restart-on-fewer-hosts]``.

torchrun's answer to a dead worker, for Horovod over MPI or Gloo, with no elastic machinery to
deadlock (horovod#3494): when a rank or a host fails, the supervisor has already stopped the
whole job; this module decides whether to start it again and where. ``train`` and ``launch``
(a user's own program) share it; only what the next attempt runs differs (``program``: train
resumes from its newest checkpoint, a user's program reads ``HVDTRAIN_ATTEMPT``).

1. **Is it worth it?** Exit codes that would repeat (``RestartPolicy.final_exit_codes``:
   train's 2, 3, 5-8; for ``launch`` those the user names with ``--no-restart-on``), a stop on
   request (75) and Ctrl-C are final. A crash, a rank killed by a signal, a launcher or ssh
   failure, ranks that never started and a hang (``--idle-timeout``) are restarted.
2. **Which host failed?** The failure names it (the first failing rank's host, the hosts of
   ranks that never started); every remote host of the plan is also probed (the quick
   preflight: ssh, same Python and Horovod, run directory), since a host whose link went down
   often shows up as some *other* rank's error.
3. **Where to restart?** On the same plan when every host answers (after up to
   ``health_wait`` seconds for a failed one to come back); otherwise, with
   ``--restart-on-fewer-hosts``, on the hosts that answer, with a new plan (fewer ranks).

Every restart is recorded (time, why, failed host, old and new size) in ``restarts.json`` (and
in ``summary.json`` when the ranks wrote one); each failed attempt's rank logs move to
``attempts/N/``. Each attempt's number and world size reach the ranks as ``HVDTRAIN_ATTEMPT``
and ``HVDTRAIN_WORLD_SIZE`` (``launch.job``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from hvdtrain.atomic import atomic_write_text
from hvdtrain.cluster.hosts import Host
from hvdtrain.cluster.placement import plan_placement
from hvdtrain.cluster.planning import Plan
from hvdtrain.errors import ConfigError, ExitCode
from hvdtrain.launch.failures import FailureKind, JobFailedError, JobFailure
from hvdtrain.launch.job import LaunchSettings, run_supervised
from hvdtrain.launch.network import is_local
from hvdtrain.launch.preflight.run import run_preflight
from hvdtrain.launch.protocol import RunLayout
from hvdtrain.launch.supervisor import JobResult, Watchdog
from hvdtrain.log import logger

# hvdtrain's own ranks: a restart would fail the same way (a launcher that could not start, 4,
# may not)
FINAL_EXIT_CODES = frozenset({ExitCode.CONFIG, ExitCode.HOSTS, ExitCode.PREFLIGHT, ExitCode.DATA,
                              ExitCode.CHECKPOINT, ExitCode.DIVERGED, ExitCode.STOPPED})
FINAL_KINDS: frozenset[FailureKind] = frozenset({"interrupted", "stopped"})
# s without output from any rank = a hang, when ``train``'s restarts are on (a host whose link
# is gone hangs the others in a collective). Not for a user's program, which may well be
# silent that long: ``--idle-timeout`` sets it.
RESTART_IDLE_TIMEOUT = 300.0


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 0
    fewer_hosts: bool = False  # --restart-on-fewer-hosts
    health_wait: float = 30.0  # seconds a failed host gets to answer again
    probe_timeout: float = 10.0  # per host and probe
    final_exit_codes: frozenset[int] = field(default=FINAL_EXIT_CODES)

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ConfigError(f"--max-restarts must be >= 0, got {self.max_restarts}")
        if self.health_wait < 0:
            raise ConfigError(f"--restart-wait must be >= 0 seconds, got {self.health_wait:g}")


def with_hang_limit(watchdog: Watchdog, policy: RestartPolicy) -> Watchdog:
    """``train``'s watchdog with restarts on: a hang (``RESTART_IDLE_TIMEOUT``) is a
    failure to restart, unless ``--idle-timeout`` chose otherwise."""
    if policy.max_restarts and watchdog.idle_timeout is None:
        return replace(watchdog, idle_timeout=RESTART_IDLE_TIMEOUT)
    return watchdog


def parse_exit_codes(text: str | None) -> frozenset[int]:
    """``--no-restart-on 2,3``: exit codes 1-255, comma-separated (None or empty: none)."""
    codes: set[int] = set()
    for part in (text or "").split(","):
        if not part.strip():
            continue
        try:
            code = int(part.strip())
        except ValueError:
            code = -1
        if not 1 <= code <= 255:
            raise ConfigError(f"--no-restart-on: {part.strip()!r} is not an exit code (1-255)",
                              hint="e.g. --no-restart-on 2,3")
        codes.add(code)
    return frozenset(codes)


@dataclass(frozen=True)
class RestartRecord:
    attempt: int  # the attempt that failed (0 = the first launch)
    time: str
    reason: str
    failed_host: str | None
    unhealthy_hosts: tuple[str, ...]
    old_world_size: int
    new_world_size: int
    resume_from: str | None
    exit_code: int | None = None  # of the failure (a killed rank: 128 + signal)


@dataclass(frozen=True)
class Attempt:
    """What the next launch is: its number (0 = the first) and its plan."""

    number: int
    plan: Plan


def worth_restarting(failure: JobFailure,
                     final_exit_codes: frozenset[int] = FINAL_EXIT_CODES) -> str | None:
    """Why this failure is final (None: restart it)."""
    if failure.kind in FINAL_KINDS:
        return f"the job was {failure.kind}"
    if failure.killed_by is None and failure.exit_code in final_exit_codes:
        return f"exit code {failure.exit_code} means a restart would fail the same way"
    return None


def suspect_hosts(failure: JobFailure, plan: Plan) -> list[str]:
    """The hosts the failure itself names: the failing rank's, or those of unstarted ranks."""
    named = [failure.host] if failure.host else []
    ranks = failure.ranks or ((failure.rank,) if failure.rank is not None else ())
    names = {slot.rank: slot.host for slot in plan.placement.ranks}
    named += [names[r] for r in ranks if r in names]
    return list(dict.fromkeys(named))


def unhealthy_hosts(plan: Plan, run_dir: Path, timeout: float) -> list[str]:
    """Remote hosts of ``plan`` that fail the quick preflight (local ones are up: we run)."""
    remote = [h for h in plan.hosts if not is_local(h.name)]
    if not remote:
        return []
    remote_plan = replace(plan, hosts=tuple(remote))
    report = run_preflight(remote_plan, run_dir, timeout, mpi_smoke=False)
    return sorted({check.host for check in report.failures})


def plan_without(plan: Plan, gone: list[str]) -> Plan:
    """The same request on the hosts that are left: as many ranks as before if they have
    the slots, else one per remaining slot."""
    left: tuple[Host, ...] = tuple(h for h in plan.hosts if h.name not in gone)
    size = min(plan.placement.size, sum(h.slots for h in left))
    return replace(plan, hosts=left, placement=plan_placement(left, size))


def _archive_attempt(layout: RunLayout, attempt: int) -> Path:
    """Keep a failed attempt's rank logs and records: the next launch reuses the paths."""
    target = layout.root / "attempts" / str(attempt)
    target.mkdir(parents=True, exist_ok=True)
    for part in (layout.logs_dir, layout.ranks_dir, layout.launcher_log):
        if part.exists():
            shutil.move(str(part), str(target / part.name))
    return target


def _write_records(layout: RunLayout, records: list[RestartRecord]) -> None:
    payload = [asdict(r) for r in records]
    atomic_write_text(layout.root / "restarts.json", json.dumps(payload, indent=2))
    summary = layout.root / "summary.json"
    if summary.is_file():  # rank 0 shares this directory: one summary says it all
        data = json.loads(summary.read_text())
        data["restarts"] = payload
        atomic_write_text(summary, json.dumps(data, indent=2))


def run_with_restarts(plan: Plan, program: Callable[[Attempt], list[str]],
                      settings: LaunchSettings, layout: RunLayout, policy: RestartPolicy,
                      resumes_from: Callable[[], str | None] = lambda: None) -> JobResult:
    """Launch, and relaunch after a restartable failure up to ``policy.max_restarts`` times.
    ``program(attempt)``: the rank command line of that attempt; ``resumes_from()``: what a
    restart continues from, for the record (train: its newest checkpoint; a user's program:
    its own business, None)."""
    records: list[RestartRecord] = []
    attempt = Attempt(0, plan)
    while True:
        try:
            result = run_supervised(attempt.plan, program(attempt),
                                    replace(settings, attempt=attempt.number), layout)
        except JobFailedError as exc:
            failure = exc.failure
            final = worth_restarting(failure, policy.final_exit_codes)
            if final or attempt.number >= policy.max_restarts:
                if records:
                    _write_records(layout, records)
                if policy.max_restarts and failure.kind != "stopped":  # a stop: as asked
                    logger.warning("not restarting: %s",
                                   final or f"all {policy.max_restarts} restarts used")
                raise
            chosen = _next_plan(attempt, failure, layout, policy)
            if isinstance(chosen, str):
                if records:
                    _write_records(layout, records)
                logger.warning("not restarting: %s", chosen)
                raise
            new_plan, record = chosen
            record = replace(record, resume_from=resumes_from())
            records.append(record)
            _write_records(layout, records)
            archive = _archive_attempt(layout, attempt.number)
            attempt = Attempt(attempt.number + 1, new_plan)
            logger.warning(
                "restart %d of %d: %s; %d ranks on %s, %s (attempt %d's logs: %s)",
                attempt.number, policy.max_restarts, record.reason, record.new_world_size,
                ", ".join(h.name for h in new_plan.hosts),
                f"from {record.resume_from}" if record.resume_from
                else f"HVDTRAIN_ATTEMPT={attempt.number}", attempt.number - 1, archive)
            continue
        if records:
            _write_records(layout, records)
        return result


def _next_plan(attempt: Attempt, failure: JobFailure, layout: RunLayout, policy: RestartPolicy
               ) -> tuple[Plan, RestartRecord] | str:
    """Probe the hosts, wait a little for failed ones, and choose the plan to restart on (or
    say why there is none)."""
    plan = attempt.plan
    named = suspect_hosts(failure, plan)
    bad = unhealthy_hosts(plan, layout.root, policy.probe_timeout)
    waited = 0.0
    while bad and waited < policy.health_wait:
        logger.warning("%s not answering; waiting up to %.0f s for it to come back",
                       ", ".join(bad), policy.health_wait - waited)
        pause = min(5.0, policy.health_wait - waited)
        time.sleep(pause)
        waited += pause
        bad = unhealthy_hosts(plan, layout.root, policy.probe_timeout)
    new_plan = plan
    if bad:
        if not policy.fewer_hosts:
            return (f"{', '.join(bad)} did not answer within {policy.health_wait:g} s "
                    "(--restart-on-fewer-hosts would continue on the hosts that answer)")
        if len(bad) == len(plan.hosts):
            return "no host of the plan answers"
        new_plan = plan_without(plan, bad)
    failed_host = named[0] if named else (bad[0] if bad else None)
    record = RestartRecord(
        attempt=attempt.number, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        reason=failure.message, failed_host=failed_host, unhealthy_hosts=tuple(bad),
        old_world_size=plan.placement.size, new_world_size=new_plan.placement.size,
        resume_from=None, exit_code=failure.exit_code)
    return new_plan, record
