"""From a placement request to a supervised job: the one library call behind
``hvdtrain plan``, ``hvdtrain launch`` and the launching side of ``hvdtrain train``.

Defaults, measured on this project's 2-core machine (see README "Choosing a launcher"):
Horovod's MPI controller moves allreduce data several times faster than its Gloo one, and
plain ``mpirun`` starts ranks without horovodrun's extra Python hop, so ``auto`` means
``mpirun`` + MPI when an MPI is installed, else ``horovodrun --gloo`` (Gloo needs no MPI).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hvdtrain.cluster.hosts import Host
from hvdtrain.cluster.pinning import PLAN_ENV, encode_plan
from hvdtrain.cluster.placement import Placement, plan_placement
from hvdtrain.cluster.selection import apply_selection
from hvdtrain.cluster.sources import HostSource, resolve_hosts
from hvdtrain.errors import LaunchError
from hvdtrain.launch.commands import (
    ALWAYS_EXPORT,
    HorovodTuning,
    LaunchCommand,
    detect_mpi_flavour,
    horovodrun_command,
    mpirun_command,
)
from hvdtrain.launch.rank_wrapper import STATUS_DIR_ENV
from hvdtrain.launch.runner import JobResult, Watchdog, run_job, wrap_program

RUN_DIR_ENV = "HVDTRAIN_RUN_DIR"


@dataclass(frozen=True)
class PlacementRequest:
    hostfile: str | None = None
    hosts: str | None = None
    np: int | None = None
    include: str | None = None
    exclude: str | None = None


@dataclass(frozen=True)
class Plan:
    source: HostSource
    hosts: tuple[Host, ...]  # after include/exclude
    placement: Placement


@dataclass(frozen=True)
class LaunchSettings:
    launcher: str = "auto"  # auto | horovodrun | mpirun
    controller: str = "auto"  # auto | mpi | gloo
    tuning: HorovodTuning = field(default_factory=HorovodTuning)
    watchdog: Watchdog = field(default_factory=Watchdog)
    mpi_flavour: str | None = None  # detected from `mpirun --version` when None


def make_plan(request: PlacementRequest) -> Plan:
    source = resolve_hosts(request.hostfile, request.hosts, request.np)
    hosts = tuple(apply_selection(source.hosts, request.include, request.exclude))
    return Plan(source, hosts, plan_placement(hosts, request.np))


def resolve_backend(settings: LaunchSettings, mpi_available: bool) -> tuple[str, str]:
    launcher, controller = settings.launcher, settings.controller
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
                  export: dict[str, str] | None = None) -> LaunchCommand:
    flavour = settings.mpi_flavour or detect_mpi_flavour()
    launcher, controller = resolve_backend(settings, flavour is not None)
    export = {PLAN_ENV: encode_plan(plan.placement), **(export or {})}
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if launcher == "horovodrun":
        binary = find_horovodrun()
        command = horovodrun_command(plan.placement, program, controller, settings.tuning,
                                     export, is_root)
        return LaunchCommand([binary, *command.argv[1:]], command.env)
    return mpirun_command(plan.placement, program, flavour or "openmpi", settings.tuning,
                          export, is_root, [n for n in ALWAYS_EXPORT if n in os.environ])


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


def new_run_dir(base: str | Path = "runs") -> Path:
    path = Path(base) / time.strftime("%Y%m%d-%H%M%S")
    suffix, candidate = 0, path
    while candidate.exists():
        suffix += 1
        candidate = path.with_name(f"{path.name}-{suffix}")
    candidate.mkdir(parents=True)
    return candidate


def launch(plan: Plan, program: list[str], settings: LaunchSettings, run_dir: Path,
           export: dict[str, str] | None = None) -> JobResult:
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    command = build_command(plan, wrap_program(run_dir, program), settings,
                            {RUN_DIR_ENV: str(run_dir), STATUS_DIR_ENV: str(run_dir / "ranks"),
                             **(export or {})})
    return run_job(command, plan.placement.size, run_dir, settings.watchdog)
