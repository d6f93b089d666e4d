"""Our placement must equal Horovod's own ``get_host_assignments`` on every layout."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvdtrain.cluster.hosts import Host
from hvdtrain.cluster.placement import plan_placement
from hvdtrain.cluster.selection import apply_selection
from hvdtrain.errors import HostfileError, PlacementError

hvd_hosts = pytest.importorskip("horovod.runner.common.util.hosts")


def horovod_assignments(hosts: list[Host], np: int) -> list[tuple[object, ...]]:
    infos = [hvd_hosts.HostInfo(h.name, h.slots) for h in hosts]
    return [(s.rank, s.hostname, s.local_rank, s.local_size, s.cross_rank, s.cross_size)
            for s in hvd_hosts.get_host_assignments(infos, np, np)]


layouts = st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(layouts, st.data())
def test_matches_horovod(slots: list[int], data: st.DataObject) -> None:
    hosts = [Host(f"h{i}", n, tuple(range(n))) for i, n in enumerate(slots)]
    np = data.draw(st.integers(min_value=1, max_value=sum(slots)))
    ours = [(r.rank, r.host, r.local_rank, r.local_size, r.cross_rank, r.cross_size)
            for r in plan_placement(hosts, np).ranks]
    assert ours == horovod_assignments(hosts, np)


def test_gpu_is_local_rank_th_id_of_host() -> None:
    hosts = [Host("a", 2, (0, 2)), Host("b", 3, (1, 5, 7))]
    placement = plan_placement(hosts)
    assert [(r.host, r.gpu) for r in placement.ranks] == [
        ("a", 0), ("a", 2), ("b", 1), ("b", 5), ("b", 7)]
    assert placement.size == 5


def test_np_larger_than_slots() -> None:
    with pytest.raises(PlacementError, match="-np 5 is larger than the 4 slots"):
        plan_placement([Host("a", 4, (0, 1, 2, 3))], 5)


def test_unused_hosts_are_dropped() -> None:
    placement = plan_placement([Host("a", 2, (0, 1)), Host("b", 2, (0, 1))], 2)
    assert [h.name for h in placement.hosts] == ["a"]


HOSTS = [Host("worker-0", 4, (0, 1, 2, 3)), Host("worker-1", 4, (0, 1, 2, 3))]


@pytest.mark.parametrize(("include", "exclude", "expected"), [
    # DeepSpeed's documented examples: --include="worker-0:0,1@worker-1", --exclude="worker-1:0"
    ("worker-0:0,1@worker-1", None, [("worker-0", 2, (0, 1)), ("worker-1", 4, (0, 1, 2, 3))]),
    ("worker-1", None, [("worker-1", 4, (0, 1, 2, 3))]),
    (None, "worker-1:0", [("worker-0", 4, (0, 1, 2, 3)), ("worker-1", 3, (1, 2, 3))]),
    (None, "worker-0@worker-1:0,1,2", [("worker-1", 1, (3,))]),
    (None, None, [("worker-0", 4, (0, 1, 2, 3)), ("worker-1", 4, (0, 1, 2, 3))]),
])
def test_include_exclude(include: str | None, exclude: str | None,
                         expected: list[tuple[str, int, tuple[int, ...]]]) -> None:
    result = apply_selection(HOSTS, include, exclude)
    assert [(h.name, h.slots, h.gpus) for h in result] == expected


@pytest.mark.parametrize(("include", "exclude", "fragment"), [
    ("worker-9", None, "unknown host 'worker-9'"),
    ("worker-0:7", None, "has no GPU id 7"),
    ("worker-0", "worker-1", "mutually exclusive"),
    ("worker-0:x", None, "cannot parse"),
])
def test_selection_errors(include: str | None, exclude: str | None, fragment: str) -> None:
    with pytest.raises(HostfileError, match=fragment):
        apply_selection(HOSTS, include, exclude)
