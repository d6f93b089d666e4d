"""Is this process already a rank, and which one? Read from the launcher's variables.

horovodrun sets ``HOROVOD_RANK``; OpenMPI ``OMPI_COMM_WORLD_*``; MPICH/Intel (Hydra) ``PMI_*``;
PMIx-based launchers (srun --mpi=pmix, OpenMPI 5) ``PMIX_RANK``. When one of these is set,
``hvdtrain train`` runs as a worker instead of launching again.

``srun --mpi=pmi2`` sets ``PMI_RANK`` too, but Open MPI can use Slurm's PMI-2 only when it was
built with it (an ``s2`` pmix component; Debian's 4.1 and every 5.x lack it: ``MPI_Init`` then
aborts with "OMPI was not built with SLURM's PMI support"). Such a task is no rank, and is
refused like a bare srun task, with the reason.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from hvdtrain.errors import LaunchError
from hvdtrain.launch.argv import detect_mpi_flavour

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


@functools.lru_cache(maxsize=1)
def slurm_pmi2_usable() -> bool:
    """Can this machine's MPI join a job through Slurm's PMI-2 (``srun --mpi=pmi2``)?

    MPICH and Intel MPI can. Open MPI can only with its ``s2`` pmix component, which
    ``ompi_info --parsable`` lists as ``mca:pmix:s2:...``. Unknown (no ompi_info) = usable:
    let MPI_Init say what is wrong rather than refuse a set-up that may work."""
    if detect_mpi_flavour() != "openmpi":
        return True
    ompi_info = shutil.which("ompi_info")
    if ompi_info is None:
        return True
    try:
        out = subprocess.run([ompi_info, "--parsable"], capture_output=True, text=True,
                             timeout=30, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return True
    return any(line.startswith("mca:pmix:s2:") for line in out.splitlines())


def _unusable_pmi2(env: Mapping[str, str], variable: str) -> bool:
    """A ``PMI_RANK`` that only srun's PMI-2 plugin set, for an MPI that cannot use it."""
    return (variable == "PMI_RANK" and env.get("SLURM_MPI_TYPE", "") == "pmi2"
            and not slurm_pmi2_usable())


def detect_rank(env: Mapping[str, str] | None = None) -> RankEnv | None:
    env = os.environ if env is None else env
    found = _first_int(env, _RANK_VARS)
    if found is None or _unusable_pmi2(env, found[1]):
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
    if not (in_a_step and tasks.isdigit() and int(tasks) > 1 and detect_rank(env) is None):
        return
    if "PMI_RANK" in env and env.get("SLURM_MPI_TYPE", "") == "pmi2":
        raise LaunchError(
            f"started by 'srun --mpi=pmi2' as task {env['SLURM_PROCID']} of {tasks}, but this "
            "Open MPI was built without Slurm's PMI-2 (no pmix s2 component in ompi_info), so "
            "the tasks cannot form one MPI job",
            hint="use 'srun --mpi=pmix' so the tasks are the ranks, or run hvdtrain once per "
            "allocation (sbatch/salloc) and let it launch")
    raise LaunchError(
        f"started by srun as task {env['SLURM_PROCID']} of {tasks} without an MPI rank: "
        "each task would launch its own job",
        hint="use 'srun --mpi=pmix' so the tasks are the ranks (or pmi2 where your MPI "
        "supports it), or run hvdtrain once per allocation (sbatch/salloc) and let it launch")
