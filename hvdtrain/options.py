"""Click options shared by ``plan``, ``launch`` and ``train``, and their conversion to the
typed requests the library takes. Defined once so the commands cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def stacked(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    """One decorator applying ``options`` so they appear in ``--help`` in list order."""

    def apply(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


launcher_option = click.option(
    "--launcher", type=click.Choice(["auto", "horovodrun", "mpirun"]), default="auto",
    show_default=True,
    help="auto = mpirun when MPI is installed (fastest allreduce here), else horovodrun --gloo.")
controller_option = click.option(
    "--controller", type=click.Choice(["auto", "mpi", "gloo"]), default="auto",
    show_default=True,
    help="Horovod controller. MPI's allreduce measured about 2x (1.0-3.3x) Gloo's on a 2-core "
    "host (docs/benchmarks.md); Gloo needs no MPI (horovodrun only).")

placement_options = stacked([
    click.option("--hostfile", type=str, default=None,
                 help="Hostfile (OpenMPI 'host slots=N', MPICH 'host:N', 'gpus=0,2'). "
                 "Else HVDTRAIN_HOSTFILE, Slurm, /etc/mpi/hostfile, then localhost."),
    click.option("--hosts", "-H", type=str, default=None,
                 help="Hosts as horovodrun's -H: 'h1:2,h2:4'."),
    click.option("-np", "--num-proc", "np", type=click.IntRange(min=1), default=None,
                 help="Number of ranks (default: every slot on offer; locally, one per "
                 "GPU or 2 CPU ranks)."),
    click.option("--include", type=str, default=None,
                 help="Only these hosts/GPUs: 'h1:0,1@h2' (DeepSpeed syntax)."),
    click.option("--exclude", type=str, default=None,
                 help="All but these hosts/GPUs: 'h1:3@h2'."),
])

launch_options = stacked([
    launcher_option,
    controller_option,
    click.option("--fusion-threshold-mb", type=click.FloatRange(min=0), default=None,
                 help="Tensor fusion buffer size in MB."),
    click.option("--cycle-time-ms", type=click.FloatRange(min=0, min_open=True),
                 default=None, help="Horovod cycle time in ms."),
    click.option("--cache-capacity", type=click.IntRange(min=0), default=None,
                 help="Response cache capacity (0 disables)."),
    click.option("--timeline-filename", type=str, default=None,
                 help="Write a Horovod timeline (chrome://tracing) here."),
    click.option("--autotune/--no-autotune", default=False, help="Horovod autotuning."),
    click.option("--log-level", type=click.Choice(
        ["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "FATAL"], case_sensitive=False),
        default=None, help="Horovod log level."),
    click.option("--start-timeout", type=click.FloatRange(min=0, min_open=True),
                 default=120.0, show_default=True,
                 help="Seconds for every rank to start before the job is stopped."),
    click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Wall-clock limit for the whole job, in seconds."),
    click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True),
                 default=None,
                 help="Stop the job when no rank writes output for this many seconds."),
    click.option("--network-interface", type=str, default=None,
                 help="Network interface for Horovod/MPI traffic (e.g. eth0)."),
    click.option("--dry-run", is_flag=True,
                 help="Print the plan and the exact command, then exit."),
])


def placement_request(kw: dict[str, Any]) -> Any:
    from hvdtrain.launch.job import PlacementRequest

    return PlacementRequest(kw["hostfile"], kw["hosts"], kw["np"], kw["include"], kw["exclude"])


def launch_settings(kw: dict[str, Any]) -> Any:
    from hvdtrain.launch.commands import HorovodTuning
    from hvdtrain.launch.job import LaunchSettings
    from hvdtrain.launch.runner import Watchdog

    tuning = HorovodTuning(
        fusion_threshold_mb=kw["fusion_threshold_mb"], cycle_time_ms=kw["cycle_time_ms"],
        cache_capacity=kw["cache_capacity"], timeline_filename=kw["timeline_filename"],
        autotune=kw["autotune"], log_level=kw["log_level"],
        start_timeout=math.ceil(kw["start_timeout"]), network_interface=kw["network_interface"])
    watchdog = Watchdog(start_timeout=kw["start_timeout"], timeout=kw["timeout"],
                        idle_timeout=kw["idle_timeout"])
    return LaunchSettings(kw["launcher"], kw["controller"], tuning, watchdog)


def show_plan(plan: Any) -> None:
    from hvdtrain.render import plan_table

    click.echo(f"source: {plan.source.description}")
    click.echo(f"size:   {plan.placement.size} ranks on {len(plan.placement.hosts)} host(s)")
    click.echo(plan_table(plan.placement))
