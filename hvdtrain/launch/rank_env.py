"""Is this process already a rank, and which one? Read from the launcher's variables.

horovodrun sets ``HOROVOD_RANK``; OpenMPI ``OMPI_COMM_WORLD_*``; MPICH/Intel (Hydra) ``PMI_*``;
PMIx-based launchers (srun --mpi=pmix, OpenMPI 5) ``PMIX_RANK``. When one of these is set,
``hvdtrain train`` runs as a worker instead of launching again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from hvdtrain.errors import LaunchError

_RANK_VARS = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")
_SIZE_VARS = ("HOROVOD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
_LOCAL_RANK_VARS = ("HOROVOD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                    "PMI_LOCAL_RANK")


@dataclass(frozen=True)
class RankEnv:
    rank: int
    size: int | None
    local_rank: int | None
    launcher_variable: str


def _first_int(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[int, str] | None:
    for name in names:
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value), name
    return None


def detect_rank(env: Mapping[str, str] | None = None) -> RankEnv | None:
    env = os.environ if env is None else env
    found = _first_int(env, _RANK_VARS)
    if found is None:
        return None
    size = _first_int(env, _SIZE_VARS)
    local = _first_int(env, _LOCAL_RANK_VARS)
    return RankEnv(found[0], size[0] if size else None, local[0] if local else None, found[1])


def refuse_bare_srun_task(env: Mapping[str, str] | None = None) -> None:
    """``srun -n2 hvdtrain train`` without a PMI plugin starts two tasks that each believe they
    are the launcher (two jobs into one run directory). Every such task stops here, at once."""
    env = os.environ if env is None else env
    tasks = env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "")).strip()
    in_a_step = "SLURM_PROCID" in env and "SLURM_STEP_ID" in env
    if in_a_step and tasks.isdigit() and int(tasks) > 1 and detect_rank(env) is None:
        raise LaunchError(
            f"started by srun as task {env['SLURM_PROCID']} of {tasks} without an MPI rank: "
            "each task would launch its own job",
            hint="use 'srun --mpi=pmix' (or pmi2) so the tasks are the ranks, or run hvdtrain "
            "once per allocation (sbatch/salloc) and let it launch")
