"""From what the user asked for (hosts, -np, include/exclude) to a ``Plan``.

The composition of the pure steps in this package: resolve where hosts come from, apply the
selection, place the ranks. ``hvdtrain plan``, ``hvdtrain launch`` and ``hvdtrain train`` all
call ``make_plan``, so what ``plan`` shows is what the others launch.
"""

from __future__ import annotations

from dataclasses import dataclass

from hvdtrain.cluster.hosts import Host
from hvdtrain.cluster.placement import Placement, plan_placement
from hvdtrain.cluster.selection import apply_selection
from hvdtrain.cluster.sources import HostSource, resolve_hosts


@dataclass(frozen=True)
class PlacementRequest:
    hostfile: str | None = None
    hosts: str | None = None
    np: int | None = None
    include: str | None = None
    exclude: str | None = None


@dataclass(frozen=True)
class Plan:
    source: HostSource
    hosts: tuple[Host, ...]  # after include/exclude
    placement: Placement


def make_plan(request: PlacementRequest) -> Plan:
    source = resolve_hosts(request.hostfile, request.hosts, request.np)
    hosts = tuple(apply_selection(source.hosts, request.include, request.exclude))
    return Plan(source, hosts, plan_placement(hosts, request.np))
