"""Open MPI's ring allreduce for multi-host plans (``launch.mpi_tuning``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvdtrain.launch.mpi_tuning import (
    RING_FROM_BYTES,
    RULES,
    RULES_FILE,
    RULES_PATH,
    USE_RULES,
    with_ring_allreduce,
)

OMPI_RANK = {"OMPI_COMM_WORLD_RANK": "1"}


def test_multi_host_open_mpi_ranks_get_the_ring_rules(tmp_path: Path) -> None:
    env = with_ring_allreduce({**OMPI_RANK, "PATH": "/bin"}, tmp_path, hosts_in_plan=3)
    assert env[USE_RULES] == "1" and env["PATH"] == "/bin"
    rules = Path(env[RULES_PATH])
    assert rules == tmp_path / RULES_FILE and rules.read_text() == RULES
    assert not list(tmp_path.glob(".*"))  # the partial file was renamed over, not left


def test_the_rules_file_says_ring_from_1_mib_on_3_ranks_and_more() -> None:
    numbers = [line.split() for line in RULES.strip().splitlines()]
    # 1 collective, allreduce (id 2), 1 communicator size: 3 ranks and more, 2 message sizes
    assert numbers[:5] == [["1"], ["2"], ["1"], ["3"], ["2"]]
    assert numbers[5] == ["0", "0", "0", "0"]  # small buffers: Open MPI's own decision
    assert numbers[6] == [str(RING_FROM_BYTES), "4", "0", "0"]  # algorithm 4 = ring


@pytest.mark.parametrize("env, hosts", [
    (OMPI_RANK, 1),  # one host: shared memory, Open MPI's choice stands
    ({"HOROVOD_RANK": "0"}, 3),  # Gloo (horovodrun --gloo): no MPI
    ({**OMPI_RANK, "OMPI_MCA_coll_tuned_allreduce_algorithm": "6"}, 3),  # the user's choice
    ({**OMPI_RANK, USE_RULES: "0"}, 3),
])
def test_left_alone(tmp_path: Path, env: dict[str, str], hosts: int) -> None:
    assert with_ring_allreduce(env, tmp_path, hosts) == env
    assert not (tmp_path / RULES_FILE).exists()


def test_a_stale_rules_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / RULES_FILE).write_text("1\n2\n")
    with_ring_allreduce(OMPI_RANK, tmp_path, 2)
    assert (tmp_path / RULES_FILE).read_text() == RULES
