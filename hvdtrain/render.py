"""Human-readable rendering of plans and reports. Kept apart so commands stay thin."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from hvdtrain.cluster.placement import Placement
from hvdtrain.launch.commands import LaunchCommand


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(out)


def plan_table(placement: Placement, gpu_hosts: bool = True) -> str:
    rows = [
        (r.rank, r.host, f"{r.local_rank}/{r.local_size}", f"{r.cross_rank}/{r.cross_size}",
         r.gpu if gpu_hosts else "cpu")
        for r in placement.ranks
    ]
    return table(("rank", "host", "local_rank", "cross_rank", "gpu"), rows)


def command_line(command: LaunchCommand) -> str:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(command.env.items())
                   if k.startswith("OMPI_"))
    argv = shlex.join(command.argv)
    return f"{env} {argv}" if env else argv
