"""Device choice and launcher-mismatch detection, without GPUs.

Whether a rank is on its planned host is decided by what the host is (names and addresses,
``HostIdentity``), whatever way the hostfile spelled it: the tables below launch the same
two-host job from hostfiles naming the hosts by address, short name, FQDN and alias.
"""

from __future__ import annotations

from collections.abc import Collection

import pytest

from hvdtrain.cluster.hosts import Host, parse_hostfile_text, require
from hvdtrain.cluster.pinning import (
    HostIdentity,
    as_address,
    choose_device,
    decode_plan,
    encode_plan,
    same_host,
)
from hvdtrain.cluster.placement import plan_placement

PLAN = decode_plan(encode_plan(plan_placement([Host("a", 2, (0, 2)), Host("b", 2, (1, 3))])))


def _here(name: str) -> HostIdentity:
    return HostIdentity.of(name, [name])


def test_plan_round_trip() -> None:
    assert PLAN == [("a", 0, 0), ("a", 1, 2), ("b", 0, 1), ("b", 1, 3)]


def test_follows_the_plan_on_gpu_hosts() -> None:
    choice = choose_device(3, 1, _here("b"), gpus_visible=4, plan=PLAN)
    assert (choice.kind, choice.index, choice.mismatch) == ("cuda", 3, None)


def test_cpu_fallback_with_one_message() -> None:
    choice = choose_device(1, 1, _here("a"), gpus_visible=0, plan=PLAN)
    assert choice.kind == "cpu" and "no GPU" in choice.message and choice.mismatch is None


def test_detects_launcher_placing_ranks_differently() -> None:
    # e.g. mpirun -map-by node: rank 1 lands on host b as local_rank 0
    choice = choose_device(1, 0, _here("b"), gpus_visible=4, plan=PLAN)
    assert choice.mismatch is not None and "planned on a as local_rank 1" in choice.mismatch
    assert choice.index == 1  # host b's GPU for its real local_rank 0
    extra = choose_device(9, 0, _here("a"), gpus_visible=4, plan=PLAN)
    assert extra.mismatch is not None and "outside the plan" in extra.mismatch


def test_no_plan_uses_local_rank() -> None:
    choice = choose_device(5, 1, _here("x"), gpus_visible=2, plan=None)
    assert (choice.kind, choice.index) == ("cuda", 1)
    missing = choose_device(0, 3, _here("x"), gpus_visible=2, plan=None)
    assert missing.kind == "cpu" and missing.mismatch


# Two hosts as their ranks see themselves: hostname, FQDN, an alias the resolver gives for the
# hostname, and every interface address (loopback, link-local and a second network included).
NODE1 = HostIdentity.of("node1", [
    "node1", "node1.cluster.example", "n1-bmc-alias", "127.0.0.1", "::1", "fe80::1",
    "10.231.0.11", "10.232.0.11", "fd00::11"])
NODE2 = HostIdentity.of("node2", [
    "node2", "node2.cluster.example", "127.0.0.1", "::1", "fe80::1", "10.231.0.12",
    "10.232.0.12", "fd00::12"])
# What the resolver (DNS, /etc/hosts) says on either host about the names a hostfile may use.
RESOLVER: dict[str, frozenset[str]] = {
    "node1": frozenset({"10.231.0.11"}), "node2": frozenset({"10.231.0.12"}),
    "node1.cluster.example": frozenset({"10.231.0.11"}),
    "node2.cluster.example": frozenset({"10.231.0.12"}),
    "node1-ib": frozenset({"10.232.0.11"}), "node2-ib": frozenset({"10.232.0.12"}),
    "trainer-a": frozenset({"10.231.0.11", "fd00::11"}),  # /etc/hosts aliases
    "trainer-b": frozenset({"fd00::12"}),
    "stale": frozenset({"127.0.1.1"}),  # a shared /etc/hosts mapping a name to loopback
}


def resolve(name: str) -> Collection[str]:
    return RESOLVER.get(name, frozenset())


HOSTFILES = {
    "addresses": "10.231.0.11 slots=1\n10.231.0.12 slots=1\n",
    "second network": "10.232.0.11 slots=1\n10.232.0.12 slots=1\n",
    "ipv6": "[fd00::11]:1\n[fd00::12]:1\n",
    "short names": "node1 slots=1\nnode2 slots=1\n",
    "FQDNs": "node1.cluster.example slots=1\nnode2.cluster.example slots=1\n",
    "upper-case FQDNs, trailing dot": "NODE1.Cluster.Example. slots=1\nNODE2.cluster.example.\n",
    "interface names": "node1-ib slots=1\nnode2-ib slots=1\n",
    "/etc/hosts aliases": "trainer-a slots=1\ntrainer-b slots=1\n",
}


def _plan(text: str) -> list[tuple[str, int, int]]:
    plan = decode_plan(encode_plan(plan_placement(require(parse_hostfile_text(text)))))
    assert plan is not None and len(plan) == 2
    return plan


@pytest.mark.parametrize("text", HOSTFILES.values(), ids=HOSTFILES.keys())
def test_a_correct_launch_does_not_warn_whatever_the_hostfile_calls_the_hosts(text: str) -> None:
    plan = _plan(text)
    for rank, here in enumerate((NODE1, NODE2)):
        choice = choose_device(rank, 0, here, gpus_visible=0, plan=plan, resolve=resolve)
        assert choice.mismatch is None, (plan[rank], choice.mismatch)


@pytest.mark.parametrize("text", HOSTFILES.values(), ids=HOSTFILES.keys())
def test_a_rank_on_the_other_host_still_warns(text: str) -> None:
    """The launcher swapped the hosts: rank 0 runs on node2, rank 1 on node1."""
    plan = _plan(text)
    for rank, here in enumerate((NODE2, NODE1)):
        choice = choose_device(rank, 0, here, gpus_visible=0, plan=plan, resolve=resolve)
        assert choice.mismatch is not None, plan[rank]
        assert f"rank {rank} was planned on {plan[rank][0]}" in choice.mismatch
        assert f"started it on {here.name} as local_rank 0" in choice.mismatch


@pytest.mark.parametrize(("planned", "expected"), [
    ("10.231.0.11", True), ("10.232.0.11", True), ("fd00::11", True), ("FD00:0::11", True),
    ("node1", True), ("NODE1", True), ("node1.cluster.example", True),
    ("node1.other.example", True),  # a short name is its FQDN's (as before)
    ("n1-bmc-alias", True), ("trainer-a", True), ("node1-ib", True),
    ("localhost", True), ("127.0.0.1", True), ("::1", True),  # the plan says "this host"
    ("10.231.0.12", False), ("fd00::12", False), ("node2", False), ("node2-ib", False),
    ("trainer-b", False), ("node2.cluster.example", False),
    ("stale", False),  # resolving to loopback proves nothing
    ("fe80::2", False), ("10.231.0.1", False), ("10", False),  # no short-name rule for addresses
    ("unknown.invalid", False),
])
def test_same_host_by_what_it_is(planned: str, expected: bool) -> None:
    assert same_host(planned, NODE1, resolve) is expected


def test_an_address_does_not_match_another_by_its_first_octet() -> None:
    """The old string rule compared "short names": 10.231.0.11 and 10.231.0.12 are both "10"."""
    here = HostIdentity.of("10.231.0.12", ["10.231.0.12"])
    assert not same_host("10.231.0.11", here)


def test_the_resolver_is_asked_only_when_names_do_not_match() -> None:
    asked: list[str] = []

    def recording(name: str) -> Collection[str]:
        asked.append(name)
        return resolve(name)

    assert same_host("node1.cluster.example", NODE1, recording)
    assert same_host("10.231.0.11", NODE1, recording)
    assert asked == []
    assert same_host("trainer-a", NODE1, recording) and asked == ["trainer-a"]


def test_identity_sorts_names_from_addresses() -> None:
    here = HostIdentity.of("Node1", ["node1.Example.", "10.0.0.1", "[fd00::1]", "fe80::1%eth0",
                                     "", "  "])
    assert here.names == {"node1", "node1.example"}
    assert here.addresses == {"10.0.0.1", "fd00::1", "fe80::1"}
    assert here.name == "Node1"
    assert as_address("node1") is None and as_address("0:0::1") == "::1"
