"""Commands as data: each launcher's argv and environment, built from a ``Placement``.

Builders return ``LaunchCommand(argv, env)``, never shell strings, so tests compare lists and
nothing is ever re-quoted. Flavour differences live here and only here:

* horovodrun: ``-np N -H h:n,...`` plus ``--gloo``/``--mpi`` and its own tuning flags.
* OpenMPI mpirun: ``--allow-run-as-root`` only when root, ``-bind-to none -map-by slot``
  (Horovod's recommendation: ranks are threads-heavy, binding to one core starves them),
  ``-x NAME`` for each exported variable, ``--oversubscribe`` so 2 ranks fit a 2-core box,
  ``mpi_yield_when_idle`` so waiting ranks do not spin on cores others compute on.
* MPICH / Intel MPI (Hydra): ``-hosts h1,h2 -ppn K -genv NAME VALUE``; Hydra cannot express
  uneven slots per host, so those are rejected with a clear error.
"""

from __future__ import annotations

import functools
import ipaddress
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from hvdtrain.catalog import LOG_LEVELS
from hvdtrain.cluster.placement import Placement
from hvdtrain.errors import ConfigError, LaunchError

CONTROLLERS = ("mpi", "gloo")  # resolved ones ("auto" is decided in launch.job)
MPI_FLAVOURS = ("openmpi", "mpich", "intel")

# Variables every rank needs to see, whichever launcher carries them.
ALWAYS_EXPORT = ("PATH", "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV",
                 "HVDTRAIN_ALLOCATOR")  # read by each host's rank wrapper (launch.allocator)


@dataclass(frozen=True)
class HorovodTuning:
    """The horovodrun knobs users expect, validated once, rendered per launcher."""

    fusion_threshold_mb: float | None = None
    cycle_time_ms: float | None = None
    cache_capacity: int | None = None
    timeline_filename: str | None = None
    autotune: bool = False
    log_level: str | None = None
    start_timeout: int | None = None
    network_interface: str | None = None  # an interface name (eth0) or a network (10.0.0.0/24)

    def __post_init__(self) -> None:
        """The single validator of these options (the Click options only parse)."""
        checks = [
            ("--fusion-threshold-mb", self.fusion_threshold_mb, ">= 0",
             lambda v: v >= 0),
            ("--cycle-time-ms", self.cycle_time_ms, "> 0", lambda v: v > 0),
            ("--cache-capacity", self.cache_capacity, ">= 0", lambda v: v >= 0),
            ("--start-timeout", self.start_timeout, "> 0", lambda v: v > 0),
        ]
        for flag, value, rule, ok in checks:
            if value is not None and not ok(value):
                raise ConfigError(f"{flag} must be {rule}, got {value}")
        if self.network_interface is not None and "/" in self.network_interface:
            try:
                ipaddress.ip_network(self.network_interface, strict=False)
            except ValueError:
                raise ConfigError(f"--network-interface {self.network_interface!r} is neither "
                                  "an interface name nor a network like 10.0.0.0/24") from None
        if self.log_level is not None and self.log_level.upper() not in LOG_LEVELS:
            raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS.names())}, "
                              f"got {self.log_level!r}")

    @property
    def network(self) -> str | None:
        """The network (CIDR) given as ``--network-interface``, if it is one."""
        value = self.network_interface
        return value if value and "/" in value else None

    @property
    def interface_name(self) -> str | None:
        """The interface name given as ``--network-interface``, if it is one."""
        value = self.network_interface
        return value if value and "/" not in value else None

    def horovodrun_flags(self) -> list[str]:
        flags: list[str] = []
        if self.fusion_threshold_mb is not None:
            flags += ["--fusion-threshold-mb", _num(self.fusion_threshold_mb)]
        if self.cycle_time_ms is not None:
            flags += ["--cycle-time-ms", _num(self.cycle_time_ms)]
        if self.cache_capacity is not None:
            flags += ["--cache-capacity", str(self.cache_capacity)]
        if self.timeline_filename:
            flags += ["--timeline-filename", self.timeline_filename]
        if self.autotune:
            flags.append("--autotune")
        if self.log_level:
            flags += ["--log-level", self.log_level.upper()]
        if self.start_timeout is not None:
            flags += ["--start-timeout", str(self.start_timeout)]
        if self.interface_name:  # a network is resolved per host by the rank wrapper
            flags += ["--network-interface", self.interface_name]
        return flags

    def environment(self) -> dict[str, str]:
        """The same knobs as the variables Horovod reads in each rank (for mpirun)."""
        env: dict[str, str] = {}
        if self.fusion_threshold_mb is not None:
            env["HOROVOD_FUSION_THRESHOLD"] = str(int(self.fusion_threshold_mb * 1024 * 1024))
        if self.cycle_time_ms is not None:
            env["HOROVOD_CYCLE_TIME"] = _num(self.cycle_time_ms)
        if self.cache_capacity is not None:
            env["HOROVOD_CACHE_CAPACITY"] = str(self.cache_capacity)
        if self.timeline_filename:
            env["HOROVOD_TIMELINE"] = self.timeline_filename
        if self.autotune:
            env["HOROVOD_AUTOTUNE"] = "1"
        if self.log_level:
            env["HOROVOD_LOG_LEVEL"] = self.log_level.upper()
        if self.interface_name:
            env["HOROVOD_GLOO_IFACE"] = self.interface_name
        return env


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class LaunchCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added on top of the caller's env


def hosts_argument(placement: Placement) -> str:
    return ",".join(f"{host.launcher_name}:{n}" for host, n in placement.host_slots())


def horovodrun_command(
    placement: Placement,
    program: Sequence[str],
    controller: str = "mpi",
    tuning: HorovodTuning | None = None,
    export: Mapping[str, str] | None = None,
    is_root: bool = False,
) -> LaunchCommand:
    if controller not in CONTROLLERS:
        raise LaunchError(f"unknown controller {controller!r} (one of {', '.join(CONTROLLERS)})")
    tuning = tuning or HorovodTuning()
    argv = ["horovodrun", "-np", str(placement.size), "-H", hosts_argument(placement),
            f"--{controller}", *tuning.horovodrun_flags()]
    env = dict(export or {})
    if controller == "mpi" and is_root:
        # horovodrun's mpirun has no --allow-run-as-root; OpenMPI honours these instead.
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return LaunchCommand([*argv, *program], env)


def mpirun_command(
    placement: Placement,
    program: Sequence[str],
    flavour: str = "openmpi",
    tuning: HorovodTuning | None = None,
    export: Mapping[str, str] | None = None,
    is_root: bool = False,
    inherit: Iterable[str] = ALWAYS_EXPORT,
) -> LaunchCommand:
    """``inherit``: variables of the caller's environment to forward (only those set)."""
    tuning = tuning or HorovodTuning()
    env = {**tuning.environment(), **(export or {})}
    names = sorted(set(env) | set(inherit))
    if flavour == "openmpi":
        argv = ["mpirun"]
        if is_root:
            argv.append("--allow-run-as-root")
        argv += ["-np", str(placement.size), "-H", hosts_argument(placement),
                 "-bind-to", "none", "-map-by", "slot", "--oversubscribe",
                 # Idle MPI waits yield the core instead of spinning: with ranks on every core
                 # (and Horovod's background thread polling) this measured +49% 2-rank training
                 # throughput here (docs/BENCHMARKS.md, `hvdtrain bench train`).
                 "-mca", "mpi_yield_when_idle", "1"]
        if tuning.network_interface:  # both the data (btl) and the start-up (oob) channel
            argv += ["-mca", "btl_tcp_if_include", tuning.network_interface,
                     "-mca", "oob_tcp_if_include", tuning.network_interface]
        for name in names:
            argv += ["-x", name]
        return LaunchCommand([*argv, *program], env)
    if flavour in ("mpich", "intel"):
        counts = {n for _, n in placement.host_slots()}
        if len(counts) != 1:
            raise LaunchError(
                f"{flavour} mpirun (Hydra) needs the same number of ranks on every host; "
                f"this plan has {hosts_argument(placement)}",
                hint="make slots even across hosts, or use --launcher horovodrun",
            )
        argv = ["mpirun", "-np", str(placement.size),
                "-hosts", ",".join(h.name for h, _ in placement.host_slots()),
                "-ppn", str(counts.pop())]
        for name in sorted(env):
            argv += ["-genv", name, env[name]]
        return LaunchCommand([*argv, *program], {})
    raise LaunchError(f"unknown MPI flavour {flavour!r} (one of {', '.join(MPI_FLAVOURS)})")


@functools.lru_cache(maxsize=4)
def mpirun_version(mpirun: str = "mpirun") -> str | None:
    """What ``mpirun --version`` says (run once per process: the flavour, ``hvdtrain env``
    and the dry run all read this); None if there is no mpirun."""
    path = shutil.which(mpirun)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout + out.stderr).strip()


def detect_mpi_flavour(mpirun: str = "mpirun") -> str | None:
    """``openmpi``, ``mpich`` or ``intel`` from ``mpirun --version``; None if no mpirun."""
    version = mpirun_version(mpirun)
    if version is None:
        return None
    text = version.lower()
    if "open mpi" in text or "open-mpi" in text:
        return "openmpi"
    if "intel" in text:
        return "intel"
    if "hydra" in text or "mpich" in text:
        return "mpich"
    return None
