"""Human-readable rendering of plans and commands. Kept apart so commands stay thin."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import click

from hvdtrain.cluster.placement import Placement
from hvdtrain.cluster.planning import Plan
from hvdtrain.launch.argv import LaunchCommand


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
    """A shell line that runs ``command``: its added variables, then its argv, all quoted."""
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(command.env.items())]
    return " ".join([*env, shlex.join(command.argv)])


def show_plan(plan: Plan) -> None:
    click.echo(f"source: {plan.source.description}")
    click.echo(f"size:   {plan.placement.size} ranks on {len(plan.placement.hosts)} host(s)")
    click.echo(plan_table(plan.placement))


def show_dry_run(plan: Plan, command: LaunchCommand) -> None:
    import os

    from hvdtrain.launch.rank_wrapper import what_it_adds

    show_plan(plan)
    hydra = "-ppn" in command.argv  # MPICH / Intel MPI: no Open MPI rules
    open_mpi = ("mpirun" in command.argv[0] and not hydra) or "--mpi" in command.argv
    added = what_it_adds(os.environ, len(plan.placement.hosts), open_mpi)
    click.echo("\neach host's rank wrapper adds: " + "; ".join(added))
    click.echo("\nthe launch runs exactly:")  # the command stays the last line
    click.echo(command_line(command))
