"""Which host this rank runs on, by what it is, and the device it pins (``cluster.pinning``).

Why: a hostfile names a host by its short name, its FQDN, an ``/etc/hosts`` alias or one of
its addresses (the common case on clusters), and the rank must tell whether it landed on the
host the plan chose. Comparing the planned string with the hostname warned on every correct
launch from an address hostfile. So the rank gathers, once, every name and address it answers
to (hostname, FQDN, the resolver's aliases and addresses for them, every address of its
interfaces, and horovodrun's ``HOROVOD_HOSTNAME``), and resolves a planned name with the same
system resolver the launcher's ssh used; ``cluster.pinning`` compares the sets, purely.

Best effort throughout: a resolver or ``ip`` that fails leaves fewer identities (at worst the
warning of old), never an exception in a rank. Evaluate and predict ranks use it too.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Mapping

from hvdtrain.cluster.pinning import HostIdentity, choose_device, decode_plan
from hvdtrain.cluster.sources import count_local_gpus
from hvdtrain.launch.network import local_addresses
from hvdtrain.launch.protocol import PLAN_ENV
from hvdtrain.types import DeviceChoice


def _resolved(name: str) -> tuple[str, list[str], list[str]]:
    """(canonical name, aliases, IPv4 addresses) of ``name``; empty when it does not resolve."""
    try:
        return socket.gethostbyname_ex(name)
    except (OSError, UnicodeError):
        return "", [], []


@functools.lru_cache(maxsize=1024)
def addresses_of(name: str) -> frozenset[str]:
    """Every address ``name`` resolves to here (IPv4 and IPv6), once per name."""
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return frozenset()
    return frozenset(str(info[4][0]) for info in infos)


def this_host(env: Mapping[str, str]) -> HostIdentity:
    """Every name and address this host answers to."""
    hostname = socket.gethostname()
    launcher_name = env.get("HOROVOD_HOSTNAME", "").strip()  # horovodrun's name for this host
    identities: set[str] = {hostname, launcher_name}
    try:
        identities.add(socket.getfqdn())
    except (OSError, UnicodeError):
        pass
    for name in {hostname, *identities} - {""}:
        canonical, aliases, addresses = _resolved(name)
        identities.update([canonical, *aliases, *addresses])
    identities.update(addresses_of(hostname))
    identities.update(local_addresses())
    return HostIdentity.of(launcher_name or hostname, identities)


def device_choice(rank: int, local_rank: int, env: Mapping[str, str],
                  gpus_visible: int | None = None) -> DeviceChoice:
    """The device for this rank under the launcher's plan (``PLAN_ENV``); the identities are
    only gathered when there is a plan to check against."""
    plan = decode_plan(env.get(PLAN_ENV))
    here = (this_host(env) if plan is not None
            else HostIdentity(env.get("HOROVOD_HOSTNAME") or socket.gethostname()))
    gpus = count_local_gpus() if gpus_visible is None else gpus_visible
    return choose_device(rank, local_rank, here, gpus, plan, addresses_of)
