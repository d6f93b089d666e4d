"""Open MPI's allreduce rules for multi-host plans (``launch.mpi_tuning``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvdtrain.launch.mpi_tuning import (
    RULES,
    RULES_FILE,
    RULES_FROM_BYTES,
    RULES_PATH,
    USE_RULES,
    with_allreduce_rules,
)

OMPI_RANK = {"OMPI_COMM_WORLD_RANK": "1"}


def test_multi_host_open_mpi_ranks_get_the_allreduce_rules(tmp_path: Path) -> None:
    env = with_allreduce_rules({**OMPI_RANK, "PATH": "/bin"}, tmp_path, hosts_in_plan=3)
    assert env[USE_RULES] == "1" and env["PATH"] == "/bin"
    rules = Path(env[RULES_PATH])
    assert rules == tmp_path / RULES_FILE and rules.read_text() == RULES
    assert not list(tmp_path.glob(".*"))  # the partial file was renamed over, not left


def test_the_rules_file_says_recursive_doubling_on_2_and_ring_on_3_from_1_mib() -> None:
    numbers = [line.split() for line in RULES.strip().splitlines()]
    # 1 collective, allreduce (id 2), 2 communicator sizes
    assert numbers[:3] == [["1"], ["2"], ["2"]]
    # 2 ranks, 2 message sizes: Open MPI's own decision below 1 MiB, recursive doubling (3)
    assert numbers[3:7] == [["2"], ["2"], ["0", "0", "0", "0"],
                            [str(RULES_FROM_BYTES), "3", "0", "0"]]
    # 3 ranks and more, 2 message sizes: Open MPI's own decision below 1 MiB, the ring (4)
    assert numbers[7:] == [["3"], ["2"], ["0", "0", "0", "0"],
                           [str(RULES_FROM_BYTES), "4", "0", "0"]]


@pytest.mark.parametrize("env, hosts", [
    (OMPI_RANK, 1),  # one host: shared memory, Open MPI's choice stands
    ({"HOROVOD_RANK": "0"}, 3),  # Gloo (horovodrun --gloo): no MPI
    ({**OMPI_RANK, "OMPI_MCA_coll_tuned_allreduce_algorithm": "6"}, 3),  # the user's choice
    ({**OMPI_RANK, USE_RULES: "0"}, 3),
])
def test_left_alone(tmp_path: Path, env: dict[str, str], hosts: int) -> None:
    assert with_allreduce_rules(env, tmp_path, hosts) == env
    assert not (tmp_path / RULES_FILE).exists()


def test_a_stale_rules_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / RULES_FILE).write_text("1\n2\n")
    with_allreduce_rules(OMPI_RANK, tmp_path, 2)
    assert (tmp_path / RULES_FILE).read_text() == RULES
