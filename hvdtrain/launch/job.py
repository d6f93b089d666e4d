"""From a plan to a supervised job: the one builder and the one library call behind
``hvdtrain plan``, ``--dry-run``, ``hvdtrain launch`` and the launching side of ``train``.

``job_command`` is the only place that turns (plan, program, settings, run directory) into the
argv and environment that run: the program wrapped by the rank wrapper, the rank protocol's
variables exported, the launcher and controller resolved. ``plan`` and ``--dry-run`` print what
it returns, and ``launch`` executes it (and records it in ``launch.json``), so what is shown is
what runs; a test compares the three.

``--elastic`` (``LaunchSettings.elastic``) builds horovodrun's elastic command instead
(``launch.elastic_hosts``: Gloo, a generated host-discovery script), and ``launch`` writes that
script into the run directory before starting it.

Defaults, measured on this project's 2-core machine (see docs/LAUNCHING.md, "Choosing a launcher"):
Horovod's MPI controller moves allreduce data several times faster than its Gloo one, and
plain ``mpirun`` starts ranks without horovodrun's extra Python hop, so ``auto`` means
``mpirun`` + MPI when an MPI is installed, else ``horovodrun --gloo`` (Gloo needs no MPI).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from hvdtrain.cluster.pinning import encode_plan
from hvdtrain.cluster.planning import Plan
from hvdtrain.errors import ConfigError, LaunchError, PreflightError
from hvdtrain.launch.argv import (
    ALWAYS_EXPORT,
    HorovodTuning,
    LaunchCommand,
    detect_mpi_flavour,
    horovodrun_command,
    mpirun_command,
)
from hvdtrain.launch.elastic_hosts import ElasticSettings, elastic_command, write_discovery
from hvdtrain.launch.network import interface_in, is_local, rendezvous_address
from hvdtrain.launch.preflight.run import run_preflight
from hvdtrain.launch.protocol import (
    ATTEMPT_ENV,
    PLAN_ENV,
    RANK_OPTIONS_ENV,
    WORLD_SIZE_ENV,
    RunLayout,
    terminal_environment,
)
from hvdtrain.launch.supervisor import JobResult, Watchdog, run_job
from hvdtrain.log import logger, rank_environment


@dataclass(frozen=True)
class LaunchSettings:
    launcher: str = "auto"  # auto | horovodrun | mpirun
    controller: str = "auto"  # auto | mpi | gloo
    tuning: HorovodTuning = field(default_factory=HorovodTuning)
    watchdog: Watchdog = field(default_factory=Watchdog)
    mpi_flavour: str | None = None  # detected from `mpirun --version` when None
    preflight: bool = True  # check remote hosts briefly before launching on them
    preflight_timeout: float = 20.0  # per host
    elastic: ElasticSettings | None = None  # --elastic: horovodrun --gloo, discovery
    # ``train``: its resolved options, exported to every rank (protocol.RANK_OPTIONS_ENV)
    rank_options: str | None = None
    attempt: int = 0  # the restart it is (``launch.restarts``): protocol.ATTEMPT_ENV


def resolve_backend(settings: LaunchSettings, mpi_available: bool) -> tuple[str, str]:
    """(launcher, controller) with ``auto`` decided."""
    launcher, controller = settings.launcher, settings.controller
    if settings.elastic is not None:  # Horovod elastic exists only as horovodrun + Gloo
        if launcher == "mpirun" or controller == "mpi":
            flag = "--launcher mpirun" if launcher == "mpirun" else "--controller mpi"
            raise ConfigError(f"--elastic needs horovodrun with Gloo; {flag} cannot add or "
                              "remove ranks while a job runs",
                              hint=f"drop {flag}, or use --max-restarts for restarts on MPI")
        return "horovodrun", "gloo"
    if launcher == "mpirun" and controller == "gloo":
        raise LaunchError("--controller gloo needs --launcher horovodrun (mpirun always uses MPI)")
    if launcher == "auto":
        launcher = "mpirun" if mpi_available and controller != "gloo" else "horovodrun"
    if controller == "auto":
        controller = "mpi" if mpi_available else "gloo"
    if controller == "mpi" and not mpi_available:
        raise LaunchError("the MPI controller needs mpirun, which is not installed",
                          hint="install OpenMPI (scripts/setup.sh does) or use --controller gloo")
    return launcher, controller


def build_command(plan: Plan, program: list[str], settings: LaunchSettings,
                  export: Mapping[str, str] | None = None,
                  environ: Mapping[str, str] | None = None,
                  locate: bool = True) -> LaunchCommand:
    """The launcher's argv and environment for ``program`` as given (not wrapped).

    ``locate``: start with horovodrun's full path (found beside this Python when it is not on
    PATH); off for commands shown for a user to type.
    """
    environ = os.environ if environ is None else environ
    flavour = settings.mpi_flavour or detect_mpi_flavour()
    launcher, controller = resolve_backend(settings, flavour is not None)
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if launcher == "horovodrun":
        command = horovodrun_command(plan.placement, program, controller, settings.tuning,
                                     export, is_root)
        binary = find_horovodrun() if locate else "horovodrun"
        return LaunchCommand([binary, *command.argv[1:]], command.env)
    return mpirun_command(plan.placement, program, flavour or "openmpi", settings.tuning,
                          export, is_root, [n for n in ALWAYS_EXPORT if n in environ])


def job_command(plan: Plan, program: list[str], settings: LaunchSettings, layout: RunLayout,
                environ: Mapping[str, str] | None = None) -> LaunchCommand:
    """Exactly what a launch runs: ``program`` under the rank wrapper, with the protocol's
    variables exported to every rank. For Gloo across hosts that includes the rendezvous
    address the hosts can reach (see ``launch.network``)."""
    mpi_available = settings.mpi_flavour is not None or detect_mpi_flavour() is not None
    launcher, controller = resolve_backend(settings, mpi_available)
    logger.debug("launcher %s, controller %s (asked for %s, %s; MPI %s)", launcher, controller,
                 settings.launcher, settings.controller,
                 "installed" if mpi_available else "not installed")
    rendezvous, network = None, settings.tuning.network
    if controller == "gloo":
        inside = interface_in(network) if network else None
        rendezvous = inside[1] if inside else rendezvous_address(
            host.name for host in plan.placement.hosts)
    export = layout.environment(encode_plan(plan.placement), rendezvous, network)
    if settings.rank_options is not None:
        export[RANK_OPTIONS_ENV] = settings.rank_options
    export[ATTEMPT_ENV] = str(settings.attempt)
    export[WORLD_SIZE_ENV] = str(plan.placement.size)
    export.update(rank_environment())  # -v/-q: the ranks' messages follow this process's
    if settings.elastic is not None:
        export.pop(PLAN_ENV)  # ranks come and go: each rank pins by its local rank instead
        export.pop(WORLD_SIZE_ENV)
        command = elastic_command(plan, layout.wrap(program), settings.elastic,
                                  settings.tuning, layout.root, export, rendezvous)
        return LaunchCommand([find_horovodrun(), *command.argv[1:]], command.env)
    # a progress bar only for a terminal (elastic: horovodrun forwards lines, never a bar)
    export.update(terminal_environment())
    return build_command(plan, layout.wrap(program), settings, export, environ)


def manual_commands(plan: Plan, program: list[str],
                    settings: LaunchSettings) -> dict[str, LaunchCommand]:
    """The commands a user can type to start the ranks without hvdtrain's supervisor (each
    rank then runs ``program`` as a worker): one per launcher that fits the settings."""
    found: dict[str, LaunchCommand] = {}
    if settings.elastic is not None:
        return found  # its discovery script is written at launch, under hvdtrain's supervision
    for launcher in ("horovodrun", "mpirun"):
        try:
            found[launcher] = build_command(plan, program, replace(settings, launcher=launcher),
                                            locate=False)
        except LaunchError:
            continue  # e.g. mpirun with --controller gloo, or no MPI for mpirun
    return found


def check_program(program: str) -> None:
    """The program of ``hvdtrain launch`` must exist and be executable here, before any rank
    starts (hosts are checked to have the same installation by the preflight)."""
    path = Path(program) if "/" in program else None
    found = shutil.which(program) if path is None else (
        program if path.is_file() and os.access(path, os.X_OK) else None)
    if found is None:
        what = "is not executable" if path is not None and path.is_file() else "was not found"
        raise LaunchError(f"{program!r} {what}" + ("" if path else " on PATH"),
                          hint="give the program's full path, e.g. "
                          f"'hvdtrain launch -np 2 -- {sys.executable} my_script.py'")


def find_horovodrun() -> str:
    """horovodrun on PATH, else beside this interpreter (a venv used without activating it)."""
    found = shutil.which("horovodrun")
    if found:
        return found
    sibling = Path(sys.executable).parent / "horovodrun"
    if sibling.is_file():
        return str(sibling)
    raise LaunchError("horovodrun not found on PATH or beside " + sys.executable,
                      hint="run scripts/setup.sh, or use --launcher mpirun")


def next_run_dir(base: str | Path = "runs") -> Path:
    """The fresh run directory a launch without ``--run-dir`` would use (not created)."""
    path = Path(base) / time.strftime("%Y%m%d-%H%M%S")
    suffix, candidate = 0, path
    while candidate.exists():
        suffix += 1
        candidate = path.with_name(f"{path.name}-{suffix}")
    return candidate


def layout_for(run_dir: str | Path | None) -> RunLayout:
    """The layout of ``run_dir`` (absolute: ranks may start elsewhere), or of a fresh one."""
    return RunLayout(Path(run_dir if run_dir else next_run_dir()).resolve())


def check_hosts(plan: Plan, settings: LaunchSettings, layout: RunLayout) -> None:
    """The brief preflight before a launch on other hosts: resolution, ssh, the same Python,
    hvdtrain and Horovod build, a writable run directory (no MPI smoke test). A failing host
    is one line with its fix, in seconds, instead of a launcher that hangs on it."""
    if not settings.preflight or all(is_local(h.name) for h in plan.hosts):
        return
    report = run_preflight(plan, layout.root, settings.preflight_timeout, mpi_smoke=False,
                           network_interface=settings.tuning.network_interface)
    failures = report.failures
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise PreflightError(
            f"preflight: {failures[0].failure_line()}{more}",
            hint="'hvdtrain preflight' with the same options shows every check "
            "(--write-good-hostfile keeps the hosts that passed); --no-preflight skips this")


def run_supervised(plan: Plan, program: list[str], settings: LaunchSettings,
           layout: RunLayout) -> JobResult:
    check_hosts(plan, settings, layout)
    layout.root.mkdir(parents=True, exist_ok=True)
    command = job_command(plan, program, settings, layout)
    if settings.elastic is not None:
        write_discovery(layout.root, plan, settings.elastic)
    layout.record_launch(command.argv, command.env)
    logger.debug("running %s", shlex.join(command.argv))
    return run_job(command, plan.placement.size, layout, settings.watchdog)


def where_logs_are(result: JobResult, layout: RunLayout) -> str:
    """The run directory's logs, or, for ranks on hosts that do not share it, host:path."""
    remote = sorted({e.logs for e in result.ranks
                     if e.logs and not layout.stderr_log(e.rank).exists()})
    if not remote:
        return str(layout.logs_dir)
    return ", ".join(remote) + " (on the ranks' own hosts)"
