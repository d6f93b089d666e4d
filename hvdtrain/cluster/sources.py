"""Where the hosts come from, in a fixed, documented order.

1. ``--hostfile`` / ``--hosts``      (what the user typed wins)
2. ``HVDTRAIN_HOSTFILE``
3. a Slurm allocation (``SLURM_JOB_NODELIST`` + ``SLURM_NTASKS_PER_NODE``/``SLURM_TASKS_PER_NODE``)
4. an MPI Operator mount at ``/etc/mpi/hostfile``
5. the local host with ``-np`` slots (or one per local GPU, or 2 CPU ranks)

Unlike DeepSpeed, a hostfile that was *named* but is missing is an error, never a silent
fall-back to localhost. ``HostSource.description`` is what ``hvdtrain plan`` prints.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hvdtrain.cluster.hosts import Host, parse_hosts_string, read_hostfile, require
from hvdtrain.cluster.slurm import expand_nodelist, expand_tasks_per_node
from hvdtrain.errors import HostfileError

MPI_OPERATOR_HOSTFILE = Path("/etc/mpi/hostfile")
LOCAL_CPU_RANKS = 2


@dataclass(frozen=True)
class HostSource:
    kind: str  # hostfile | hosts | env-hostfile | slurm | mpi-operator | local
    description: str
    hosts: tuple[Host, ...]


def count_local_gpus(dev: Path = Path("/dev")) -> int:
    """NVIDIA GPUs visible here, without importing a framework (``/dev/nvidiaN`` nodes)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([item for item in visible.split(",") if item.strip() not in ("", "-1")])
    try:
        return sum(1 for p in dev.iterdir() if p.name[6:].isdigit() and p.name.startswith("nvidia"))
    except OSError:
        return 0


def _slurm_hosts(env: Mapping[str, str]) -> tuple[Host, ...]:
    names = expand_nodelist(env["SLURM_JOB_NODELIST"])
    variable = next(
        (v for v in ("SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE") if env.get(v)), None
    )
    counts = expand_tasks_per_node(env[variable], variable) if variable else [1]
    if len(counts) == 1:
        counts = counts * len(names)
    if len(counts) != len(names):
        raise HostfileError(
            [f"{variable} gives {len(counts)} task counts for {len(names)} nodes in "
             f"SLURM_JOB_NODELIST={env['SLURM_JOB_NODELIST']!r}"]
        )
    gpus = slurm_gpu_ids(env)
    pairs = zip(names, counts, strict=True)
    return tuple(Host(name, slots, gpus if gpus and len(gpus) >= slots else tuple(range(slots)))
                 for name, slots in pairs)


GPU_VARIABLES = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES")


def slurm_gpu_ids(env: Mapping[str, str]) -> tuple[int, ...] | None:
    """The GPU ids Slurm gave this job on a node (``0,2``, ``0-3`` or ``0-1,4``), from the
    first of ``SLURM_STEP_GPUS``, ``SLURM_JOB_GPUS``, ``CUDA_VISIBLE_DEVICES`` that is set and
    numeric (UUIDs or ``NoDevFiles`` mean: use the slots' local order). Slurm gives the same
    GRES on every node of a homogeneous allocation, so every host gets these ids."""
    for variable in GPU_VARIABLES:
        value = env.get(variable, "").strip()
        if not value:
            continue
        ids: list[int] = []
        for part in value.split(","):
            low, _, high = part.strip().partition("-")
            if not low.isdigit() or (high and not high.isdigit()):
                return None
            ids += range(int(low), int(high or low) + 1)
        return tuple(ids) or None
    return None


def resolve_hosts(
    hostfile: str | None = None,
    hosts: str | None = None,
    np: int | None = None,
    env: Mapping[str, str] | None = None,
    mpi_operator_hostfile: Path = MPI_OPERATOR_HOSTFILE,
    local_gpus: int | None = None,
) -> HostSource:
    env = os.environ if env is None else env
    if hostfile and hosts:
        raise HostfileError(["--hostfile and --hosts are mutually exclusive; give one"])
    if hostfile:
        hosts_found = tuple(require(read_hostfile(hostfile)))
        return HostSource("hostfile", f"hostfile {hostfile}", hosts_found)
    if hosts:
        return HostSource("hosts", f"--hosts {hosts}", tuple(require(parse_hosts_string(hosts))))
    if env.get("HVDTRAIN_HOSTFILE"):
        path = env["HVDTRAIN_HOSTFILE"]
        return HostSource(
            "env-hostfile", f"HVDTRAIN_HOSTFILE={path}", tuple(require(read_hostfile(path)))
        )
    if env.get("SLURM_JOB_NODELIST"):
        return HostSource(
            "slurm", f"Slurm allocation {env['SLURM_JOB_NODELIST']}", _slurm_hosts(env)
        )
    if mpi_operator_hostfile.is_file():
        return HostSource(
            "mpi-operator",
            f"MPI Operator hostfile {mpi_operator_hostfile}",
            tuple(require(read_hostfile(mpi_operator_hostfile))),
        )
    gpus = count_local_gpus() if local_gpus is None else local_gpus
    if np is not None:
        slots, why = np, f"-np {np}"
    elif gpus:
        slots, why = gpus, f"one rank per local GPU ({gpus})"
    else:
        slots, why = LOCAL_CPU_RANKS, f"no GPU found: {LOCAL_CPU_RANKS} CPU ranks"
    return HostSource(
        "local", f"local host, {why}", (Host("localhost", slots, tuple(range(slots))),)
    )
