"""Human-readable rendering of plans and commands. Kept apart so commands stay thin."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

import click

from hvdtrain.cluster.placement import Placement
from hvdtrain.cluster.planning import Plan
from hvdtrain.launch.argv import LaunchCommand
from hvdtrain.launch.protocol import ATTEMPT_ENV, WORLD_SIZE_ENV
from hvdtrain.launch.restarts import RestartPolicy
from hvdtrain.launch.supervisor import Watchdog


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


def fault_tolerance(policy: RestartPolicy, watchdog: Watchdog) -> list[str]:
    """What a job does on a failure and on a stop request, one line each: ``plan`` and
    ``--dry-run`` show it for ``train`` and ``launch`` alike."""
    own = not watchdog.graceful_stop  # a user's program (``launch``)
    if policy.max_restarts:
        where = (f"the same hosts once they answer (up to {policy.health_wait:g} s), else "
                 + ("the hosts that do" if policy.fewer_hosts else "no restart"))
        final = ", ".join(str(c) for c in sorted(policy.final_exit_codes))
        restarts = (f"on failure: restart up to {policy.max_restarts} time(s) on {where}; "
                    f"exit codes {final} are final"
                    + (f"; each attempt gets {ATTEMPT_ENV}=0,1,... and {WORLD_SIZE_ENV}" if own
                       else "; from the newest checkpoint"))
    else:
        restarts = "on failure: stop every rank, no restart (--max-restarts 0)"
    if watchdog.idle_timeout is not None:
        restarts += f"; {watchdog.idle_timeout:g} s without output is a failure"
    if watchdog.elastic:
        restarts = "on failure: Horovod elastic goes on with the ranks left (--min-np)"
    what = ("every rank gets SIGUSR1 (checkpoint and exit 75 if it can)" if own
            else "every rank stops at its next step, rank 0 writes a checkpoint, exit 75")
    stop = (f"on SIGTERM/SIGUSR1: {what}; after {watchdog.stop_timeout:g} s (--stop-timeout) "
            "or a second signal, stopped at once; exit 75 is never restarted")
    return [restarts, stop]


def show_dry_run(plan: Plan, command: LaunchCommand, notes: Sequence[str] = ()) -> None:
    """The plan, the wrapper's additions, ``notes`` (``fault_tolerance``), then the command
    (always the last line)."""
    import os

    from hvdtrain.launch.rank_wrapper import what_it_adds

    show_plan(plan)
    hydra = "-ppn" in command.argv  # MPICH / Intel MPI: no Open MPI rules
    open_mpi = ("mpirun" in command.argv[0] and not hydra) or "--mpi" in command.argv
    added = what_it_adds(os.environ, len(plan.placement.hosts), open_mpi)
    click.echo("\neach host's rank wrapper adds: " + "; ".join(added))
    if notes:
        click.echo("")
        for line in notes:
            click.echo(line)
    click.echo("\nthe launch runs exactly:")  # the command stays the last line
    click.echo(command_line(command))
