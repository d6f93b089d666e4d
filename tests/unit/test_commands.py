"""Argv builders: lists compared exactly, per launcher and MPI flavour."""

import pytest

from hvdtrain.cluster.hosts import Host
from hvdtrain.cluster.placement import plan_placement
from hvdtrain.errors import ConfigError, LaunchError
from hvdtrain.launch.argv import HorovodTuning, horovodrun_command, mpirun_command
from hvdtrain.launch.job import LaunchSettings, resolve_backend

PLACEMENT = plan_placement([Host("a", 2, (0, 1)), Host("b", 2, (0, 1))])
PROGRAM = ["hvdtrain", "train"]


def test_horovodrun() -> None:
    tuning = HorovodTuning(fusion_threshold_mb=32, cycle_time_ms=2.5, autotune=True,
                           log_level="debug", start_timeout=30, network_interface="eth0")
    cmd = horovodrun_command(PLACEMENT, PROGRAM, "gloo", tuning, {"X": "1"}, is_root=True)
    assert cmd.argv == ["horovodrun", "-np", "4", "-H", "a:2,b:2", "--gloo",
                        "--fusion-threshold-mb", "32", "--cycle-time-ms", "2.5", "--autotune",
                        "--log-level", "DEBUG", "--start-timeout", "30",
                        "--network-interface", "eth0", "hvdtrain", "train"]
    assert cmd.env == {"X": "1"}  # no OMPI root variables for gloo
    mpi = horovodrun_command(PLACEMENT, PROGRAM, "mpi", is_root=True)
    assert mpi.env["OMPI_ALLOW_RUN_AS_ROOT"] == "1"


def test_openmpi_root_and_exports() -> None:
    tuning = HorovodTuning(fusion_threshold_mb=1, cache_capacity=0)
    cmd = mpirun_command(PLACEMENT, PROGRAM, "openmpi", tuning, {"HVDTRAIN_PLAN": "[]"},
                         is_root=True)
    assert cmd.argv[:12] == ["mpirun", "--allow-run-as-root", "-np", "4", "-H", "a:2,b:2",
                             "-bind-to", "none", "-map-by", "slot", "--oversubscribe", "-mca"]
    assert cmd.argv[12:14] == ["mpi_yield_when_idle", "1"]
    assert cmd.argv[-2:] == PROGRAM
    exported = [cmd.argv[i + 1] for i, a in enumerate(cmd.argv) if a == "-x"]
    assert {"HOROVOD_FUSION_THRESHOLD", "HOROVOD_CACHE_CAPACITY", "HVDTRAIN_PLAN",
            "PATH"} <= set(exported)
    assert cmd.env["HOROVOD_FUSION_THRESHOLD"] == str(1024 * 1024)
    assert "--allow-run-as-root" not in mpirun_command(PLACEMENT, PROGRAM, is_root=False).argv


def test_mpich_even_and_uneven() -> None:
    cmd = mpirun_command(PLACEMENT, PROGRAM, "mpich", export={"A": "b"})
    assert cmd.argv == ["mpirun", "-np", "4", "-hosts", "a,b", "-ppn", "2", "-genv", "A", "b",
                        "hvdtrain", "train"]
    uneven = plan_placement([Host("a", 2, (0, 1)), Host("b", 1, (0,))])
    with pytest.raises(LaunchError, match="same number of ranks on every host"):
        mpirun_command(uneven, PROGRAM, "intel")


def test_tuning_validation() -> None:
    with pytest.raises(ConfigError, match="--log-level must be one of"):
        HorovodTuning(log_level="LOUD")
    with pytest.raises(ConfigError, match="--cycle-time-ms must be > 0"):
        HorovodTuning(cycle_time_ms=0)


def test_backend_resolution() -> None:
    assert resolve_backend(LaunchSettings(), mpi_available=True) == ("mpirun", "mpi")
    assert resolve_backend(LaunchSettings(), mpi_available=False) == ("horovodrun", "gloo")
    assert resolve_backend(LaunchSettings(controller="gloo"), True) == ("horovodrun", "gloo")
    with pytest.raises(LaunchError, match="needs --launcher horovodrun"):
        resolve_backend(LaunchSettings(launcher="mpirun", controller="gloo"), True)
