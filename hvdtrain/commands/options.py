"""Click options shared by ``plan``, ``launch`` and ``train``, and their conversion to the
typed requests the library takes. Defined once so the commands cannot drift apart.

Options only parse: choices come from ``catalog`` and every range is checked by the typed
object the option feeds (``TrainConfig``, ``HorovodTuning``, ``Watchdog``), so a value from a
YAML file or an ``HVDTRAIN_*`` variable meets the same check and message as a flag.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from click.core import ParameterSource

from hvdtrain import catalog
from hvdtrain.cluster.planning import PlacementRequest
from hvdtrain.data.text import TEXT_SUFFIXES
from hvdtrain.errors import ConfigError, ExitCode
from hvdtrain.launch.argv import HorovodTuning
from hvdtrain.launch.elastic_hosts import ElasticSettings
from hvdtrain.launch.job import LaunchSettings
from hvdtrain.launch.protocol import encode_rank_options, rank_options
from hvdtrain.launch.restarts import RestartPolicy, parse_exit_codes
from hvdtrain.launch.supervisor import Watchdog
from hvdtrain.log import configure_cli, level_from
from hvdtrain.pretrained import parse_pretrained

F = TypeVar("F", bound=Callable[..., Any])

# --resume values that are not paths
RESUME_WORDS = frozenset({"latest", "auto"})


def stacked(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    """One decorator applying ``options`` so they appear in ``--help`` in list order."""

    def apply(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


def choice(registry: catalog.Registry[Any], **kw: Any) -> Callable[[F], F]:
    """A ``click.Choice`` option whose names come from a catalog registry."""
    return click.option(registry.flag, type=click.Choice(registry.names()), **kw)


def verbosity_options(func: F) -> F:
    """``-v/--verbose`` and ``-q/--quiet``, on every command: the level of the ``hvdtrain``
    logger (``hvdtrain.log``), set up before the command runs. Neither: a rank takes the level
    its launcher passed on (``log.LEVEL_ENV``), anything else the default (notes shown). The
    final error line is not a diagnostic and shows at every level."""

    @functools.wraps(func)
    def run(*args: Any, verbose: bool, quiet: bool, **kw: Any) -> Any:
        if verbose and quiet:
            raise click.UsageError("-v/--verbose and -q/--quiet contradict each other")
        configure_cli(level_from(verbose, quiet))
        return func(*args, **kw)

    return stacked([
        click.option("-v", "--verbose", is_flag=True,
                     help="Debug detail too (the ranks of a launch get it as well)."),
        click.option("-q", "--quiet", is_flag=True,
                     help="Warnings and errors only, no notes (the ranks too)."),
    ])(cast(F, run))


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
    choice(catalog.LAUNCHERS, default="auto", show_default=True,
           help="auto = mpirun when MPI is installed (fastest allreduce here), else "
           "horovodrun --gloo."),
    choice(catalog.CONTROLLERS, default="auto", show_default=True,
           help="Horovod controller. MPI's allreduce measured about 2x (1.0-3.3x) Gloo's on a "
           "2-core host (docs/BENCHMARKS.md); Gloo needs no MPI (horovodrun only)."),
    click.option("--fusion-threshold-mb", type=float, default=None,
                 help="Tensor fusion buffer size in MB."),
    click.option("--cycle-time-ms", type=float, default=None,
                 help="Horovod cycle time in ms (hvdtrain's ranks: 0.2 unless set; Horovod's "
                 "own default is 1; docs/BENCHMARKS.md)."),
    click.option("--cache-capacity", type=int, default=None,
                 help="Response cache capacity (0 disables)."),
    click.option("--timeline-filename", type=str, default=None,
                 help="Write a Horovod timeline (chrome://tracing) here."),
    click.option("--autotune/--no-autotune", default=False, help="Horovod autotuning."),
    click.option("--log-level", type=click.Choice(catalog.LOG_LEVELS.names(),
                                                  case_sensitive=False),
                 default=None, help="Horovod log level."),
    click.option("--start-timeout", type=float, default=120.0, show_default=True,
                 help="Seconds for every rank to start before the job is stopped."),
    click.option("--timeout", type=float, default=None,
                 help="Wall-clock limit for the whole job, in seconds."),
    click.option("--idle-timeout", type=float, default=None,
                 help="Stop the job when no rank writes output for this many seconds."),
    click.option("--stop-timeout", type=float, default=20.0, show_default=True,
                 help="On SIGTERM/SIGUSR1, seconds the ranks get to stop (train: at their "
                 "next step, with a checkpoint; launch: the program gets SIGUSR1) before "
                 "they are stopped at once."),
    click.option("--network-interface", type=str, default=None,
                 help="Interface (eth0) or network (10.0.0.0/24) for Horovod/MPI traffic; a "
                 "network lets each host use its own interface in it."),
    click.option("--preflight/--no-preflight", default=True, show_default=True,
                 help="Before launching on other hosts, check them briefly (ssh, versions, "
                 "run dir); 'hvdtrain preflight' runs every check."),
])

elastic_options = stacked([
    click.option("--elastic", is_flag=True,
                 help="Horovod elastic (horovodrun --gloo): ranks may fail or join while the "
                 "job runs; hosts are re-read from the hostfile (edit it to add or remove "
                 "hosts). See docs/FAULT_TOLERANCE.md."),
    click.option("--min-np", type=int, default=None,
                 help="--elastic: fewest ranks to go on with (default: -np); below it the "
                 "job waits up to --elastic-timeout for hosts, then stops."),
    click.option("--max-np", type=int, default=None,
                 help="--elastic: most ranks to grow to (default: no cap)."),
    click.option("--elastic-timeout", type=float, default=600.0, show_default=True,
                 help="--elastic: seconds to wait for --min-np slots before stopping."),
    click.option("--reset-limit", type=int, default=None,
                 help="--elastic: membership changes allowed before the job stops."),
])

# ``launch`` (and ``plan``, which shows it): a user's own host discovery for --elastic
discovery_script_option = click.option(
    "--discovery-script", type=str, default=None, metavar="SCRIPT",
    help="launch --elastic: your own host discovery (an executable printing 'host:slots' "
    "lines; run once before the launch); default: one hvdtrain writes, re-reading the "
    "hostfile.")

restart_options = stacked([
    click.option("--max-restarts", type=int, default=0, show_default=True,
                 help="When a rank or host fails, restart the job up to N times (train: from "
                 "the newest checkpoint; launch: HVDTRAIN_ATTEMPT tells your program), on the "
                 "same hosts once they answer again."),
    click.option("--restart-on-fewer-hosts", is_flag=True,
                 help="With --max-restarts: if a failed host does not answer within "
                 "--restart-wait, restart on the hosts that do (fewer ranks)."),
    click.option("--restart-wait", type=float, default=30.0, show_default=True,
                 help="Seconds a failed host gets to answer again before a restart."),
])

# ``launch`` (and ``plan``, which shows it): a user's program's own final exit codes
no_restart_on_option = click.option(
    "--no-restart-on", type=str, default=None, metavar="CODES",
    help="launch, with --max-restarts: your program's exit codes that are final, e.g. 2,3 "
    "(75, a stop on request, always is).")

dry_run_option = click.option(
    "--dry-run", is_flag=True,
    help="Print the plan and the exact command and environment a launch runs, then exit.")


def placement_request(kw: dict[str, Any]) -> PlacementRequest:
    return PlacementRequest(kw["hostfile"], kw["hosts"], kw["np"], kw["include"], kw["exclude"])


def launch_settings(kw: dict[str, Any], require_ready: bool = False,
                    graceful_stop: bool = False, forward_stop: bool = False) -> LaunchSettings:
    """``require_ready``: start-up ends when each rank reports Horovod initialised (only
    hvdtrain's own workers report it). ``graceful_stop``: the ranks are training workers that
    stop at their next step, with a checkpoint, on SIGUSR1 (``Watchdog.graceful_stop``);
    ``forward_stop``: a user's program, given SIGUSR1 and ``--stop-timeout`` alike."""
    start_timeout = kw["start_timeout"]
    tuning = HorovodTuning(
        fusion_threshold_mb=kw["fusion_threshold_mb"], cycle_time_ms=kw["cycle_time_ms"],
        cache_capacity=kw["cache_capacity"], timeline_filename=kw["timeline_filename"],
        autotune=kw["autotune"], log_level=kw["log_level"],
        start_timeout=math.ceil(start_timeout) if start_timeout > 0 else None,
        network_interface=kw["network_interface"])
    watchdog = Watchdog(start_timeout=start_timeout, timeout=kw["timeout"],
                        idle_timeout=kw["idle_timeout"], require_ready=require_ready,
                        graceful_stop=graceful_stop, forward_stop=forward_stop,
                        stop_timeout=kw.get("stop_timeout", 20.0))
    elastic = elastic_settings(kw)
    if elastic is not None:
        watchdog = replace(watchdog, elastic=True)
    return replace(LaunchSettings(kw["launcher"], kw["controller"]), tuning=tuning,
                   watchdog=watchdog, preflight=kw["preflight"], elastic=elastic)


def restart_policy(kw: dict[str, Any], final_exit_codes: frozenset[int] | None = None
                   ) -> RestartPolicy:
    """``--max-restarts`` and its options; ``final_exit_codes``: exit codes never restarted
    (default: hvdtrain's own that would repeat, ``launch.restarts.FINAL_EXIT_CODES``)."""
    if final_exit_codes is None:
        return RestartPolicy(kw["max_restarts"], kw["restart_on_fewer_hosts"], kw["restart_wait"])
    return RestartPolicy(kw["max_restarts"], kw["restart_on_fewer_hosts"], kw["restart_wait"],
                         final_exit_codes=final_exit_codes)


def program_final_codes(kw: dict[str, Any]) -> frozenset[int]:
    """The exit codes of a user's program that are never restarted: ``--no-restart-on``
    and 75, a stop on request."""
    return parse_exit_codes(kw.get("no_restart_on")) | {ExitCode.STOPPED}


def elastic_settings(kw: dict[str, Any]) -> ElasticSettings | None:
    """``--elastic`` and its options (None without ``--elastic``; its options alone are an
    error rather than silently ignored)."""
    given = [flag for flag, key in (("--min-np", "min_np"), ("--max-np", "max_np"),
                                    ("--reset-limit", "reset_limit"),
                                    ("--discovery-script", "discovery_script"))
             if kw.get(key) is not None]
    if not kw.get("elastic"):
        if given:
            raise ConfigError(f"{given[0]} needs --elastic")
        return None
    if kw.get("include") or kw.get("exclude"):
        raise ConfigError("--elastic takes its hosts from the whole hostfile (re-read while "
                          "the job runs); --include/--exclude do not apply",
                          hint="list the hosts to use in the hostfile itself")
    return ElasticSettings(kw["min_np"], kw["max_np"], kw["elastic_timeout"],
                           kw["reset_limit"], kw["hostfile"], kw.get("discovery_script"))


def train_program() -> list[str]:
    """What every rank runs for a launched ``hvdtrain train``: the command alone. Its options
    travel resolved in the rank protocol (``options_for_ranks``), never re-read on the
    rank's host, whose environment and files may differ from the launcher's."""
    return [sys.executable, "-m", "hvdtrain", "train"]


def with_absolute_paths(kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` with its file options absolute, as the launching directory means them: ranks
    start elsewhere (another host, another working directory)."""
    absolute = dict(kw)
    if kw.get("data") and Path(kw["data"]).suffix in (*catalog.DATA_FILES.names(),
                                                      *TEXT_SUFFIXES):
        absolute["data"] = os.path.abspath(kw["data"])
    pretrained = parse_pretrained(kw.get("model") or "")
    if pretrained is not None and Path(pretrained.spec).expanduser().is_dir():
        directory = Path(pretrained.spec).expanduser().resolve()
        absolute["model"] = f"{pretrained.kind.prefix}:{directory}"
    if kw.get("resume") and kw["resume"] not in RESUME_WORDS:
        absolute["resume"] = os.path.abspath(kw["resume"])
    for name in ("run_dir", "timeline_filename"):
        if kw.get(name):
            absolute[name] = os.path.abspath(kw[name])
    return absolute


def options_for_ranks(kw: dict[str, Any], run_dir: Path) -> str:
    """The value of the rank protocol's options variable: ``kw`` as resolved here (defaults <
    file < environment < flags), paths absolute, the run directory the launcher chose."""
    return encode_rank_options({**with_absolute_paths(kw), "run_dir": str(run_dir)})


def options_in_rank(parsed: dict[str, Any], ctx: click.Context) -> dict[str, Any]:
    """A rank's options: the launcher's resolved ones where it sent them, overridden only by
    flags on the rank's own command line (a restart adds ``--resume``); a rank that a user's
    own mpirun started keeps what it parsed."""
    from_launcher = rank_options(os.environ)
    if from_launcher is None:
        return parsed
    flags = {name: value for name, value in parsed.items()
             if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE}
    return {**parsed, **from_launcher, **flags}
