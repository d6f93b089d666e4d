"""Which device a rank should use, and whether the launcher placed it where we planned.

Pure decision logic (unit-tested without GPUs); the framework adapters apply the result with
``torch.cuda.set_device`` or ``tf.config.set_visible_devices``. The plan travels to ranks
encoded by ``encode_plan`` (rank → host, local_rank, gpu) in the variable the rank protocol
(``launch.protocol``) names. A launcher that fills hosts differently
(``-map-by node``, a different hostfile order) shows up here as a clear warning instead of
two ranks silently sharing one GPU.

Whether a rank runs on its planned host is decided by what the host *is*, not by how the
hostfile spelled it: clusters name hosts by address, FQDN or an ``/etc/hosts`` alias, and the
rank only knows its hostname, so comparing strings warned on every correct launch from an
address hostfile. The rank gathers every name and address it answers to once
(``training.host_identity``: the I/O lives there, this stays pure) and resolves the planned
name; here the two sets are compared. Loopback addresses prove nothing (every host has them,
and a shared ``/etc/hosts`` may map any name to 127.0.1.1) unless the plan itself says
localhost.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from hvdtrain.cluster.placement import Placement
from hvdtrain.types import DeviceChoice

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def as_address(text: str) -> str | None:
    """``text`` as a canonical IP address (``fe80::1%eth0`` → ``fe80::1``), or None for a
    name."""
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]").split("%")[0]))
    except ValueError:
        return None


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


@dataclass(frozen=True)
class HostIdentity:
    """Everything one host answers to: ``names`` (hostname, FQDN, aliases; lower case) and
    ``addresses`` (of its interfaces, and what its own names resolve to; canonical).
    ``name`` is what messages call it."""

    name: str
    names: frozenset[str] = frozenset()
    addresses: frozenset[str] = frozenset()

    @classmethod
    def of(cls, name: str, identities: Iterable[str]) -> HostIdentity:
        """From a mix of names and address literals, sorted and normalised."""
        names: set[str] = set()
        addresses: set[str] = set()
        for item in (name, *identities):
            if not item or not item.strip():
                continue
            address = as_address(item)
            if address is None:
                names.add(item.strip().lower().rstrip("."))
            else:
                addresses.add(address)
        return cls(name, frozenset(names), frozenset(addresses))


def _no_addresses(_name: str) -> Collection[str]:
    return ()


def same_host(planned: str, here: HostIdentity,
              resolve: Callable[[str], Collection[str]] = _no_addresses) -> bool:
    """Whether the plan's ``planned`` (a hostfile's name or address) is ``here``: a literal
    address that is one of here's; a name that is one of here's (a short name matches its
    FQDN); or a name that ``resolve`` (called only then) maps to one of here's addresses."""
    literal = as_address(planned)
    if literal is not None:
        return _is_loopback(literal) or literal in here.addresses
    name = planned.strip().lower().rstrip(".")
    if name in LOCAL_NAMES or name in here.names:
        return True
    short = name.split(".")[0]
    if any(own.split(".")[0] == short for own in here.names):
        return True
    wanted = {a for a in map(as_address, resolve(planned)) if a and not _is_loopback(a)}
    return bool(wanted & here.addresses)


def encode_plan(placement: Placement) -> str:
    """Compact JSON for the ranks: one ``[host, local_rank, gpu]`` per rank."""
    return json.dumps([[r.host, r.local_rank, r.gpu] for r in placement.ranks],
                      separators=(",", ":"))


def decode_plan(text: str | None) -> list[tuple[str, int, int]] | None:
    if not text:
        return None
    try:
        rows = json.loads(text)
        return [(str(h), int(lr), int(g)) for h, lr, g in rows]
    except (ValueError, TypeError):
        return None


def choose_device(
    rank: int,
    local_rank: int,
    here: HostIdentity,
    gpus_visible: int,
    plan: list[tuple[str, int, int]] | None,
    resolve: Callable[[str], Collection[str]] = _no_addresses,
) -> DeviceChoice:
    """The device for ``rank`` running ``here``; ``resolve`` maps a planned host name to its
    addresses as seen from here (only asked when names do not already match)."""
    mismatch = None
    gpu = local_rank
    if plan is not None:
        if rank >= len(plan):
            mismatch = (f"rank {rank} is outside the plan of {len(plan)} ranks: the launcher "
                        f"started more ranks than 'hvdtrain plan' placed")
        else:
            planned_host, planned_local, planned_gpu = plan[rank]
            if planned_local != local_rank or not same_host(planned_host, here, resolve):
                mismatch = (f"rank {rank} was planned on {planned_host} as local_rank "
                            f"{planned_local} (GPU {planned_gpu}) but the launcher started it "
                            f"on {here.name or '?'} as local_rank "
                            f"{local_rank}; using GPU by its real local_rank")
                actual = next((h for h, _lr, _g in plan if same_host(h, here, resolve)), None)
                host_gpus = [g for h, _lr, g in plan if h == actual]
                gpu = host_gpus[local_rank] if local_rank < len(host_gpus) else local_rank
            else:
                gpu = planned_gpu
    if gpus_visible <= 0:
        return DeviceChoice("cpu", None, f"rank {rank}: no GPU on this host, using CPU", mismatch)
    if gpu >= gpus_visible:
        return DeviceChoice(
            "cpu", None,
            f"rank {rank}: planned GPU {gpu} but only {gpus_visible} visible, using CPU",
            mismatch or f"rank {rank}: GPU {gpu} does not exist here ({gpus_visible} visible)")
    return DeviceChoice("cuda", gpu, f"rank {rank}: GPU {gpu}", mismatch)
