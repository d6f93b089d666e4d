"""Choosing the address and interface hosts reach each other on (no traffic is sent)."""

from __future__ import annotations

import pytest

from hvdtrain.cluster.hosts import Host
from hvdtrain.cluster.placement import plan_placement
from hvdtrain.errors import ConfigError
from hvdtrain.launch.argv import HorovodTuning, horovodrun_command, mpirun_command
from hvdtrain.launch.network import interface_in, rendezvous_address, route_source_address
from hvdtrain.launch.protocol import NETWORK_ENV, RENDEZVOUS_ENV
from hvdtrain.launch.rank_wrapper import child_environment

PLACEMENT = plan_placement([Host("a", 1, (0,)), Host("b", 1, (0,))])


def test_loopback_routes_and_networks() -> None:
    assert route_source_address("127.0.0.1") == "127.0.0.1"
    assert interface_in("127.0.0.0/8") == ("lo", "127.0.0.1")
    assert interface_in("203.0.113.0/24") is None  # TEST-NET-3: no interface of ours
    assert rendezvous_address(["localhost", "127.0.0.1"]) is None  # nothing remote


def test_wrapper_fixes_horovodruns_gloo_guess() -> None:
    guessed = {"HOROVOD_GLOO_RENDEZVOUS_ADDR": "192.0.2.2", "HOROVOD_GLOO_IFACE": "eth9",
               RENDEZVOUS_ENV: "127.0.0.1"}
    child = child_environment(guessed)
    assert child["HOROVOD_GLOO_RENDEZVOUS_ADDR"] == "127.0.0.1"
    assert child["HOROVOD_GLOO_IFACE"] == "lo"  # this host's own route to the launcher
    by_network = child_environment({NETWORK_ENV: "127.0.0.0/8", "HOROVOD_GLOO_IFACE": "x"})
    assert by_network["HOROVOD_GLOO_IFACE"] == "lo"
    assert child_environment({"A": "1"}) == {"A": "1"}  # not Gloo, no protocol: untouched


def test_a_network_goes_to_both_mpi_channels_and_not_to_horovodrun() -> None:
    tuning = HorovodTuning(network_interface="10.231.0.0/24")
    argv = mpirun_command(PLACEMENT, ["p"], tuning=tuning).argv
    assert "btl_tcp_if_include" in argv and "oob_tcp_if_include" in argv
    assert argv[argv.index("oob_tcp_if_include") + 1] == "10.231.0.0/24"
    gloo = horovodrun_command(PLACEMENT, ["p"], "gloo", tuning)
    assert "--network-interface" not in gloo.argv  # resolved per host by the rank wrapper
    named = horovodrun_command(PLACEMENT, ["p"], "gloo", HorovodTuning(network_interface="ib0"))
    assert named.argv[named.argv.index("--network-interface") + 1] == "ib0"
    with pytest.raises(ConfigError, match="neither an interface name nor a network"):
        HorovodTuning(network_interface="10.0.0.0/99")
