"""Where a run's results are, and bringing them back to the launcher's host.

A run directory need not be shared (local disks, a login node, a Kubernetes MPIJob): rank 0
then writes checkpoints, metrics and ``summary.json`` on *its* host and every rank its logs on
its own. "results in /path" would name a path that does not exist where the user reads it, so
the launcher says ``host:/path``, and with ``--fetch-results`` (on by default when the
directory is not shared) copies rank 0's outputs and every rank's logs back into its own view
of the run directory, over the same ssh the launchers use: ``rsync`` where both ends have it,
else ``scp``. A copy that fails is a warning naming what is where; the job has succeeded.

Whether a host shares the directory is read from what the launcher can see: a rank's log file
exists in the launcher's view exactly when the rank's host writes to the same directory.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from hvdtrain.launch.processes import Ran, run_bounded
from hvdtrain.launch.protocol import RankExit, RunLayout

SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=10")
COPY_TIMEOUT_S = 600.0
NOT_COPIED = frozenset({"ranks", "launch.json", "launcher.log"})  # the launcher's own


@dataclass(frozen=True)
class Fetched:
    """What came back (``copied``: "host: what") and what did not (``failed``: "host:path
    (why)"); both empty when every rank's host shares the run directory."""

    copied: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()


def rank_hosts(exits: Sequence[RankExit], planned: Mapping[int, str] | None) -> dict[int, str]:
    """Each finished rank's host by the name the launcher reaches it with: the plan's (a
    hostfile's name or address) when the plan still holds, else the rank's own hostname (an
    elastic job's ranks move)."""
    return {e.rank: (planned or {}).get(e.rank, e.host) for e in exits}


def remote_hosts(layout: RunLayout, rank_hosts: Mapping[int, str]) -> dict[str, list[int]]:
    """The hosts whose ranks wrote outside the launcher's view of the run directory, each
    with its ranks (rank 0's host first)."""
    found: dict[str, list[int]] = {}
    for rank in sorted(rank_hosts):
        if not layout.stderr_log(rank).exists():
            found.setdefault(rank_hosts[rank], []).append(rank)
    return found


def where_results_are(layout: RunLayout, rank_hosts: Mapping[int, str]) -> str:
    """``/path``, or ``host:/path`` when rank 0's host does not share the run directory."""
    host = rank_hosts.get(0)
    if host is None or layout.stderr_log(0).exists():
        return str(layout.root)
    return f"{host}:{layout.root}"


Runner = Callable[[Sequence[str], float], Ran]


def _failure(ran: Ran) -> str:
    if ran.returncode is None:
        return "timed out"
    last = (ran.stderr.strip().splitlines() or [f"exit code {ran.returncode}"])[-1]
    return last.strip()


def _copy(host: str, sources: Sequence[str], target: str, run: Runner) -> Ran:
    """``sources`` (absolute paths on ``host``) into the local directory ``target``: with
    rsync when it is here and there (exit 127: not on the remote host), else scp (over SFTP,
    then scp's own protocol for an sshd without the SFTP subsystem)."""
    if shutil.which("rsync"):
        ssh = " ".join(("ssh", *SSH_OPTIONS))
        ran = run(["rsync", "-a", "-e", ssh, *(f"{host}:{s}" for s in sources), target + "/"],
                  COPY_TIMEOUT_S)
        if ran.returncode != 127 and "rsync: command not found" not in ran.stderr:
            return ran
    remote = [f"{host}:{s}" for s in sources]
    ran = run(["scp", "-r", "-p", "-q", *SSH_OPTIONS, *remote, target + "/"], COPY_TIMEOUT_S)
    if ran.returncode not in (0, None):  # an sshd without the SFTP subsystem: scp's old protocol
        legacy = run(["scp", "-O", "-r", "-p", "-q", *SSH_OPTIONS, *remote, target + "/"],
                     COPY_TIMEOUT_S)
        if legacy.returncode == 0 or "unknown option" not in legacy.stderr:
            return legacy
    return ran


def _entries(host: str, directory: str, run: Runner) -> tuple[list[str], str | None]:
    """The names in ``directory`` on ``host`` (or the reason they could not be listed)."""
    ran = run(["ssh", *SSH_OPTIONS, "-T", host, "ls", "-A", directory], 30.0)
    if ran.returncode != 0:
        return [], _failure(ran)
    return [n for n in ran.stdout.split() if n not in NOT_COPIED], None


def fetch_results(layout: RunLayout, rank_hosts: Mapping[int, str],
                  run: Runner = run_bounded) -> Fetched:
    """Copy rank 0's outputs (everything of its run directory but the launcher's records)
    and every other remote rank's logs into ``layout`` here."""
    copied: list[str] = []
    failed: list[str] = []
    root = str(layout.root)
    for host, ranks in remote_hosts(layout, rank_hosts).items():
        if 0 in ranks:
            names, why = _entries(host, root, run)
            sources = [f"{root}/{name}" for name in names]
            what = ", ".join(names)
        else:
            why, sources = None, [str(layout.logs_dir)]
            what = f"logs of rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
        if why is None and sources:
            layout.root.mkdir(parents=True, exist_ok=True)
            ran = _copy(host, sources, root, run)
            why = None if ran.returncode == 0 else _failure(ran)
        if why is None:
            if sources:
                copied.append(f"{host}: {what}")
        else:
            failed.append(f"{host}:{root} ({why})")
    return Fetched(tuple(copied), tuple(failed))
