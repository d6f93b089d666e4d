"""DeepSpeed-style ``--include`` / ``--exclude``: ``host[:id,id...][@host[:id,...]...]``.

Ids are GPU ids *of that host* (from its ``gpus=`` list, or ``0..slots-1``). A bare host means
all of it. Filtering a host down to some GPUs leaves it one slot per remaining GPU (never more
slots than it had). Unknown hosts or ids are errors, not silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hvdtrain.cluster.hosts import Host
from hvdtrain.errors import HostfileError

Selection = dict[str, tuple[int, ...] | None]  # host -> ids, None = the whole host


def parse_selection(text: str, flag: str) -> Selection:
    selection: Selection = {}
    for item in text.split("@"):
        item = item.strip()
        match = re.fullmatch(r"([^:\s\[\]]+|\[[^\]]+\])(?::([\d,\s]+))?", item)
        if not match:
            raise HostfileError([f"{flag}: cannot parse {item!r} in {text!r} "
                                 "(expected host[:id,id...][@host...])"])
        host = match.group(1).strip("[]")
        if host in selection:
            raise HostfileError([f"{flag}: host {host!r} named twice in {text!r}"])
        ids = match.group(2)
        selection[host] = (
            tuple(int(i) for i in ids.split(",") if i.strip()) if ids is not None else None
        )
    return selection


def _check_known(hosts: Sequence[Host], selection: Selection, flag: str) -> None:
    by_name = {h.name: h for h in hosts}
    problems = []
    for name, ids in selection.items():
        host = by_name.get(name)
        if host is None:
            problems.append(f"{flag}: unknown host {name!r} (hosts: {', '.join(by_name)})")
            continue
        unknown = [i for i in ids or () if i not in host.gpus]
        if unknown:
            problems.append(
                f"{flag}: host {name!r} has no GPU id {unknown[0]} "
                f"(it offers {','.join(map(str, host.gpus))})"
            )
    if problems:
        raise HostfileError(problems)


def _with_gpus(host: Host, gpus: tuple[int, ...]) -> Host:
    return Host(host.name, min(host.slots, len(gpus)), gpus, host.max_slots, host.line)


def apply_selection(
    hosts: Sequence[Host], include: str | None = None, exclude: str | None = None
) -> list[Host]:
    if include and exclude:
        raise HostfileError(["--include and --exclude are mutually exclusive; give one"])
    if include:
        chosen = parse_selection(include, "--include")
        _check_known(hosts, chosen, "--include")
        result = []
        for host in hosts:
            if host.name not in chosen:
                continue
            ids = chosen[host.name]
            result.append(host if ids is None else _with_gpus(host, tuple(ids)))
        return result
    if exclude:
        dropped = parse_selection(exclude, "--exclude")
        _check_known(hosts, dropped, "--exclude")
        result = []
        for host in hosts:
            if host.name not in dropped:
                result.append(host)
                continue
            ids = dropped[host.name]
            if ids is None:
                continue
            remaining = tuple(g for g in host.gpus if g not in ids)
            if remaining:
                result.append(_with_gpus(host, remaining))
        return result
    return list(hosts)
