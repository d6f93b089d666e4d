"""The rank-side half of the placement check (``training.host_identity``), on this machine:
the identities it gathers, and the warning for a plan that puts this rank elsewhere.

Only loopback, this machine's own addresses and names that resolve locally or never
(``.invalid``) are looked up.
"""

from __future__ import annotations

import socket

import pytest

from hvdtrain.cluster.hosts import Host
from hvdtrain.cluster.pinning import encode_plan
from hvdtrain.cluster.placement import plan_placement
from hvdtrain.launch.network import local_addresses
from hvdtrain.launch.protocol import PLAN_ENV
from hvdtrain.training.host_identity import addresses_of, device_choice, this_host


def _env(*hosts: str, **extra: str) -> dict[str, str]:
    plan = plan_placement([Host(h, 1, (0,)) for h in hosts])
    return {PLAN_ENV: encode_plan(plan), **extra}


def _own_address() -> str:
    """An address of one of this machine's interfaces other than loopback."""
    own = sorted(a for a in local_addresses() if not a.startswith(("127.", "::1", "fe80:")))
    if not own:
        pytest.skip("this machine has no address besides loopback")
    return own[0]


def test_this_host_is_its_names_and_every_interface_address() -> None:
    here = this_host({})
    assert here.name == socket.gethostname()
    assert socket.gethostname().lower() in here.names
    assert local_addresses() <= here.addresses
    assert "127.0.0.1" in here.addresses


def test_horovodruns_name_for_the_host_counts_and_names_it() -> None:
    here = this_host({"HOROVOD_HOSTNAME": "Trainer-7.Example"})
    assert here.name == "Trainer-7.Example" and "trainer-7.example" in here.names


@pytest.mark.parametrize("planned", ["hostname", "fqdn", "address", "localhost"])
def test_a_plan_naming_this_host_in_any_way_does_not_warn(planned: str) -> None:
    name = {"hostname": socket.gethostname(), "fqdn": socket.getfqdn(),
            "address": _own_address(), "localhost": "localhost"}[planned]
    choice = device_choice(0, 0, _env(name), gpus_visible=0)
    assert choice.mismatch is None, choice.mismatch


def test_a_plan_putting_this_rank_on_another_host_warns() -> None:
    """The plan says rank 1 runs on hvdh-elsewhere.invalid; it runs here."""
    choice = device_choice(1, 0, _env(socket.gethostname(), "hvdh-elsewhere.invalid"),
                           gpus_visible=0)
    assert choice.mismatch is not None
    assert "rank 1 was planned on hvdh-elsewhere.invalid" in choice.mismatch
    assert f"started it on {socket.gethostname()}" in choice.mismatch


def test_a_plan_naming_another_address_warns() -> None:
    """TEST-NET-3 (never contacted: an address literal is compared, not looked up)."""
    choice = device_choice(0, 0, _env("203.0.113.7"), gpus_visible=0)
    assert choice.mismatch is not None and "planned on 203.0.113.7" in choice.mismatch


def test_no_plan_gathers_nothing_and_warns_nothing() -> None:
    choice = device_choice(0, 0, {}, gpus_visible=0)
    assert choice.mismatch is None and choice.kind == "cpu"


def test_names_that_do_not_resolve_resolve_to_nothing() -> None:
    assert addresses_of("hvdh-nowhere.invalid") == frozenset()
    assert "127.0.0.1" in addresses_of("localhost")
