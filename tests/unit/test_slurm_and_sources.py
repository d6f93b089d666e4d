"""Slurm hostlist expansion and the documented order of host sources."""

from collections.abc import Callable
from pathlib import Path

import pytest

from hvdtrain.cluster.slurm import expand_nodelist, expand_tasks_per_node
from hvdtrain.cluster.sources import resolve_hosts
from hvdtrain.errors import HostfileError

HOSTFILES = Path(__file__).resolve().parents[2] / "hostfiles"
NO_MPI_OPERATOR = Path("/nonexistent/hostfile")


def test_expand_nodelist() -> None:
    assert expand_nodelist("gpu-[01-03,07],cpu1") == ["gpu-01", "gpu-02", "gpu-03", "gpu-07",
                                                      "cpu1"]
    assert expand_nodelist("r[1-2]n[8-9]") == ["r1n8", "r1n9", "r2n8", "r2n9"]
    assert expand_nodelist("single") == ["single"]


@pytest.mark.parametrize("bad", ["gpu-[01-03", "gpu-[3-1]", "gpu-[a]", "a,,b"])
def test_bad_nodelist(bad: str) -> None:
    with pytest.raises(HostfileError):
        expand_nodelist(bad)


def test_expand_tasks() -> None:
    assert expand_tasks_per_node("4(x3),2") == [4, 4, 4, 2]
    with pytest.raises(HostfileError):
        expand_tasks_per_node("0")


def test_source_order() -> None:
    env = {"HVDTRAIN_HOSTFILE": str(HOSTFILES / "two-nodes.txt"),
           "SLURM_JOB_NODELIST": "gpu-[01-02]", "SLURM_NTASKS_PER_NODE": "2"}
    hf = str(HOSTFILES / "single-node.txt")
    assert resolve_hosts(hostfile=hf, env=env).kind == "hostfile"
    assert resolve_hosts(hosts="a:1", env=env).kind == "hosts"
    assert resolve_hosts(env=env).kind == "env-hostfile"
    del env["HVDTRAIN_HOSTFILE"]
    slurm = resolve_hosts(env=env, mpi_operator_hostfile=NO_MPI_OPERATOR)
    assert slurm.kind == "slurm"
    assert [(h.name, h.slots) for h in slurm.hosts] == [("gpu-01", 2), ("gpu-02", 2)]
    operator = resolve_hosts(env={}, mpi_operator_hostfile=HOSTFILES / "two-nodes.txt")
    assert operator.kind == "mpi-operator"
    local = resolve_hosts(env={}, np=3, mpi_operator_hostfile=NO_MPI_OPERATOR, local_gpus=0)
    assert local.kind == "local" and local.hosts[0].slots == 3
    assert resolve_hosts(env={}, mpi_operator_hostfile=NO_MPI_OPERATOR,
                         local_gpus=0).hosts[0].slots == 2
    assert resolve_hosts(env={}, mpi_operator_hostfile=NO_MPI_OPERATOR,
                         local_gpus=4).hosts[0].slots == 4


def test_slurm_uneven_counts() -> None:
    env = {"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_NTASKS_PER_NODE": "4(x3),2"}
    with pytest.raises(HostfileError, match="4 task counts for 3 nodes"):
        resolve_hosts(env=env, mpi_operator_hostfile=NO_MPI_OPERATOR)


def test_named_but_missing_hostfile_is_an_error() -> None:
    with pytest.raises(HostfileError, match="no such hostfile"):
        resolve_hosts(hostfile="/nonexistent.txt", env={})


@pytest.mark.parametrize(("env", "gpus"), [
    ({"SLURM_JOB_GPUS": "0,2"}, (0, 2)),
    ({"SLURM_STEP_GPUS": "1-2", "SLURM_JOB_GPUS": "0-3"}, (1, 2)),  # the step's own wins
    ({"CUDA_VISIBLE_DEVICES": "0-1,4"}, (0, 1, 4)),
    ({"CUDA_VISIBLE_DEVICES": "GPU-3f2a"}, None),  # UUIDs: local order
    ({}, None),
])
def test_gpu_ids_from_slurm(env: dict[str, str], gpus: tuple[int, ...] | None) -> None:
    from hvdtrain.cluster.sources import slurm_gpu_ids

    assert slurm_gpu_ids(env) == gpus


def test_slurm_gpus_become_the_plans_gpu_ids() -> None:
    env = {"SLURM_JOB_NODELIST": "g[1-2]", "SLURM_NTASKS_PER_NODE": "2",
           "SLURM_JOB_GPUS": "1,3"}
    source = resolve_hosts(env=env, mpi_operator_hostfile=NO_MPI_OPERATOR)
    assert [h.gpus for h in source.hosts] == [(1, 3), (1, 3)]


@pytest.mark.parametrize(("env", "refused"), [
    ({"SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2"}, True),
    ({"SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "PMIX_RANK": "0"}, False),
    ({"SLURM_PROCID": "0", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "1"}, False),  # one task
    ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}, False),  # the batch script itself
])
def test_bare_srun_tasks_are_refused(env: dict[str, str], refused: bool) -> None:
    from hvdtrain.errors import LaunchError
    from hvdtrain.launch.rank_env import refuse_bare_srun_task

    if refused:
        with pytest.raises(LaunchError, match="without an MPI rank") as refusal:
            refuse_bare_srun_task(env)
        assert "srun --mpi=pmix" in (refusal.value.hint or "")
    else:
        refuse_bare_srun_task(env)


PMI2_TASK = {"SLURM_PROCID": "1", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2",
             "SLURM_MPI_TYPE": "pmi2", "PMI_RANK": "1", "PMI_SIZE": "2", "PMI_FD": "13"}


def test_pmi2_task_is_a_rank_where_the_mpi_supports_pmi2(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from hvdtrain.launch import rank_env

    monkeypatch.setattr(rank_env, "slurm_pmi2_usable", lambda: True)
    found = rank_env.detect_rank(PMI2_TASK)
    assert found is not None and (found.rank, found.size) == (1, 2)
    rank_env.refuse_bare_srun_task(PMI2_TASK)


def test_pmi2_task_is_refused_where_open_mpi_lacks_slurm_pmi2(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian's Open MPI 4.1: MPI_Init would abort in every task; say so before anything."""
    from hvdtrain.errors import LaunchError
    from hvdtrain.launch import rank_env

    monkeypatch.setattr(rank_env, "slurm_pmi2_usable", lambda: False)
    assert rank_env.detect_rank(PMI2_TASK) is None
    with pytest.raises(LaunchError, match=r"srun --mpi=pmi2.*without Slurm's PMI-2") as refusal:
        rank_env.refuse_bare_srun_task(PMI2_TASK)
    assert "srun --mpi=pmix" in (refusal.value.hint or "")
    # Hydra (MPICH) sets PMI_RANK without srun: never affected.
    hydra = {"PMI_RANK": "0", "PMI_SIZE": "2"}
    assert rank_env.detect_rank(hydra) is not None


def test_pmi2_usability_from_ompi_info(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from hvdtrain.launch import rank_env

    def fake_run(out: str) -> Callable[..., subprocess.CompletedProcess[str]]:
        def run(*args: object, **kwargs: object) -> subprocess.CompletedProcess[str]:
            return subprocess.CompletedProcess(list(args), 0, out, "")
        return run

    monkeypatch.setattr(rank_env, "detect_mpi_flavour", lambda: "openmpi")
    monkeypatch.setattr(rank_env.shutil, "which", lambda name: "/usr/bin/" + name)
    for listing, usable in [('mca:pmix:ext3x:version:"mca:2.1.0"\n', False),
                            ('mca:pmix:s2:version:"mca:2.1.0"\n', True)]:
        monkeypatch.setattr(rank_env.subprocess, "run", fake_run(listing))
        rank_env.slurm_pmi2_usable.cache_clear()
        assert rank_env.slurm_pmi2_usable() is usable
    monkeypatch.setattr(rank_env, "detect_mpi_flavour", lambda: "mpich")
    rank_env.slurm_pmi2_usable.cache_clear()
    assert rank_env.slurm_pmi2_usable() is True
    rank_env.slurm_pmi2_usable.cache_clear()
