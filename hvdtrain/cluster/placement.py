"""Rank placement, exactly as Horovod assigns ranks, plus the GPU each rank will use.

Ranks fill hosts in order, slot by slot (Horovod's ``get_host_assignments``): ``cross_rank``
of a rank is its index among the hosts that have a rank with the same ``local_rank``. Tests
compare this function with Horovod's own on many layouts. Each rank's ``gpu`` is the
``local_rank``-th id its host offers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from hvdtrain.cluster.hosts import Host
from hvdtrain.errors import PlacementError


@dataclass(frozen=True)
class RankSlot:
    rank: int
    host: str
    local_rank: int
    local_size: int
    cross_rank: int
    cross_size: int
    gpu: int

    def as_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Placement:
    hosts: tuple[Host, ...]  # only hosts that received ranks, with slots actually used
    ranks: tuple[RankSlot, ...]

    @property
    def size(self) -> int:
        return len(self.ranks)

    def host_slots(self) -> list[tuple[Host, int]]:
        """Each used host with how many ranks it runs (for ``-H host:n``)."""
        counts: dict[str, int] = {}
        for slot in self.ranks:
            counts[slot.host] = counts.get(slot.host, 0) + 1
        return [(h, counts[h.name]) for h in self.hosts]


def plan_placement(hosts: Sequence[Host], np: int | None = None) -> Placement:
    offered = sum(h.slots for h in hosts)
    if not hosts or offered == 0:
        raise PlacementError("no hosts to place ranks on")
    size = offered if np is None else np
    if size <= 0:
        raise PlacementError(f"-np must be positive, got {size}")
    if size > offered:
        raise PlacementError(
            f"-np {size} is larger than the {offered} slots on offer "
            f"({', '.join(f'{h.name}:{h.slots}' for h in hosts)})",
            hint="lower -np or add slots/hosts to the hostfile",
        )

    per_host: list[tuple[Host, list[int]]] = []
    cross_index: dict[int, dict[str, int]] = {}
    rank = 0
    for host in hosts:
        ranks: list[int] = []
        for local_rank in range(host.slots):
            if rank == size:
                break
            ranks.append(rank)
            rank += 1
            at_local = cross_index.setdefault(local_rank, {})
            at_local[host.name] = len(at_local)
        if ranks:
            per_host.append((host, ranks))

    slots = []
    for host, ranks in per_host:
        for local_rank, global_rank in enumerate(ranks):
            at_local = cross_index[local_rank]
            slots.append(
                RankSlot(
                    rank=global_rank,
                    host=host.name,
                    local_rank=local_rank,
                    local_size=len(ranks),
                    cross_rank=at_local[host.name],
                    cross_size=len(at_local),
                    gpu=host.gpus[local_rank],
                )
            )
    return Placement(tuple(h for h, _ in per_host), tuple(slots))
