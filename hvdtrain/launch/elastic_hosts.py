"""Horovod elastic on the launching side: ``hvdtrain train --elastic --min-np A --max-np B``.

horovodrun runs an elastic job when it gets ``--host-discovery-script``: it calls the script
about once a second, starts ranks on hosts that appear (up to ``--max-np``), drops hosts whose
ranks fail (blacklisted), and tells the ranks to re-form whenever the set changes; below
``--min-np`` it waits up to ``--elastic-timeout`` seconds for hosts, then ends the job. Elastic
needs the Gloo controller (horovodrun's own rendezvous), never mpirun.

hvdtrain *generates* the script in the run directory (``discover-hosts.sh``). It runs
``python -m hvdtrain.cluster.discover HOSTFILE``, which re-reads the hostfile on every call,
with hvdtrain's hostfile grammar: editing the file adds or removes hosts while the job runs.
The hostfile is the user's ``--hostfile``; for hosts given any other way (``--hosts``, local
``-np``, Slurm) hvdtrain writes them to ``elastic-hosts`` in the run directory, and that file
can be edited the same way.

A user's own script (``--discovery-script``, ``hvdtrain launch --elastic``) is used as given;
``launch.user_elastic`` runs it once before the launch and checks what it prints.

**Always a ``--network-interface``.** Without one, horovodrun's elastic driver waits, silently,
until the discovery offers at least two hosts (it compares their interfaces over ssh) and, on
one host, gives up only after ``--elastic-timeout`` (600 s): plain ``horovodrun --gloo
--host-discovery-script`` on one machine prints nothing and seems to hang. So with only this
machine's hosts horovodrun gets the loopback interface, and with other hosts the launcher's
interface on its route to them; each host's rank wrapper then puts its own interface towards
the rendezvous address in ``HOROVOD_GLOO_IFACE`` (``launch.network``), whatever the name here.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from hvdtrain.atomic import atomic_write, atomic_write_text
from hvdtrain.cluster.discover import discovery_lines
from hvdtrain.cluster.hosts import Host
from hvdtrain.cluster.planning import Plan
from hvdtrain.errors import ConfigError
from hvdtrain.launch.argv import HorovodTuning, LaunchCommand
from hvdtrain.launch.network import interface_towards, is_local

SCRIPT_NAME = "discover-hosts.sh"
HOSTFILE_NAME = "elastic-hosts"  # written when the hosts did not come from --hostfile
DISCOVERY_MODULE = "hvdtrain.cluster.discover"
DEFAULT_TIMEOUT = 600.0  # Horovod's own default (HOROVOD_ELASTIC_TIMEOUT)


@dataclass(frozen=True)
class ElasticSettings:
    """What ``--elastic`` adds to a launch. ``None`` bounds take Horovod's defaults (min: the
    initial -np, max: no cap)."""

    min_np: int | None = None
    max_np: int | None = None
    timeout: float = DEFAULT_TIMEOUT  # --elastic-timeout: seconds below --min-np
    reset_limit: int | None = None  # --reset-limit: membership changes before giving up
    hostfile: str | None = None  # the user's --hostfile, re-read on every discovery
    discovery_script: str | None = None  # the user's own (--discovery-script), used as given

    def __post_init__(self) -> None:
        for flag, value in (("--min-np", self.min_np), ("--max-np", self.max_np)):
            if value is not None and value < 1:
                raise ConfigError(f"{flag} must be >= 1, got {value}")
        if self.min_np is not None and self.max_np is not None and self.min_np > self.max_np:
            raise ConfigError(f"--min-np {self.min_np} is above --max-np {self.max_np}")
        if not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ConfigError(f"--elastic-timeout must be > 0 seconds, got {self.timeout:g}")
        if self.reset_limit is not None and self.reset_limit < 0:
            raise ConfigError(f"--reset-limit must be >= 0, got {self.reset_limit}")

    def check(self, np: int) -> None:
        """``min <= np <= max`` for the initial rank count."""
        if self.min_np is not None and np < self.min_np:
            raise ConfigError(f"--elastic: -np {np} is below --min-np {self.min_np}",
                              hint="the job starts with -np ranks; give -np >= --min-np")
        if self.max_np is not None and np > self.max_np:
            raise ConfigError(f"--elastic: -np {np} is above --max-np {self.max_np}",
                              hint="give -np (the ranks to start with) <= --max-np")


def script_path(root: Path) -> Path:
    return root / SCRIPT_NAME


def discovery_script(root: Path, settings: ElasticSettings) -> Path:
    """The script horovodrun runs: the user's own, else the one written into ``root``."""
    if settings.discovery_script:
        return Path(settings.discovery_script).resolve()
    return script_path(root)


def hostfile_path(root: Path, settings: ElasticSettings) -> Path:
    """The hostfile the discovery script re-reads."""
    if settings.hostfile:
        return Path(settings.hostfile).resolve()
    return root / HOSTFILE_NAME


def script_text(hostfile: Path, python: str = sys.executable) -> str:
    return ("#!/bin/sh\n"
            "# Written by hvdtrain for Horovod elastic (horovodrun --host-discovery-script):\n"
            "# prints host:slots for every host in the hostfile, read afresh on each call, so\n"
            "# editing that file adds or removes hosts while the job runs.\n"
            f"exec {shlex.quote(python)} -m {DISCOVERY_MODULE} {shlex.quote(str(hostfile))}\n")


def write_discovery(root: Path, plan: Plan, settings: ElasticSettings) -> Path:
    """Write the discovery script (and, for hosts not from a hostfile, the hostfile it
    reads); returns the script's path. A user's own script is left as it is."""
    if settings.discovery_script:
        return discovery_script(root, settings)
    hostfile = hostfile_path(root, settings)
    if not settings.hostfile:
        lines, problems = discovery_lines(plan.hosts)
        if problems:
            raise ConfigError(f"--elastic: {problems[0]}")
        atomic_write_text(hostfile, "# hosts of this elastic job: edit to add or remove hosts\n"
                          + "\n".join(lines) + "\n")
    script = script_path(root)

    def executable(tmp: Path) -> None:
        tmp.write_text(script_text(hostfile))
        os.chmod(tmp, 0o755)

    atomic_write(script, executable)  # a relaunch replaces the last one whole, mode and all
    return script


def all_local(hosts: tuple[Host, ...]) -> bool:
    return all(is_local(host.name) for host in hosts)


def elastic_command(plan: Plan, program: list[str], settings: ElasticSettings,
                    tuning: HorovodTuning, root: Path,
                    export: dict[str, str] | None = None,
                    rendezvous: str | None = None) -> LaunchCommand:
    """``horovodrun -np N --min-np A --max-np B --host-discovery-script S --gloo ...``.
    ``rendezvous``: the launcher's address the remote hosts reach (``launch.network``)."""
    np = plan.placement.size
    settings.check(np)
    argv = ["horovodrun", "-np", str(np)]
    if settings.min_np is not None:
        argv += ["--min-np", str(settings.min_np)]
    if settings.max_np is not None:
        argv += ["--max-np", str(settings.max_np)]
    argv += ["--host-discovery-script", shlex.quote(str(discovery_script(root, settings))),
             "--gloo",
             "--elastic-timeout", str(math.ceil(settings.timeout))]
    if settings.reset_limit is not None:
        argv += ["--reset-limit", str(settings.reset_limit)]
    argv += tuning.horovodrun_flags()
    if not tuning.network_interface:  # else horovodrun waits for two hosts (see above)
        towards = "lo" if all_local(plan.hosts) else (
            interface_towards(rendezvous) if rendezvous else None)
        if towards:
            argv += ["--network-interface", towards]
    # horovodrun imports TensorFlow when it is installed; its start-up notes are noise here
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", **(export or {})}
    return LaunchCommand([*argv, *program], env)
