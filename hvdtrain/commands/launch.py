"""``hvdtrain launch -- PROGRAM``: plan and launch a user's own Horovod program, supervised.

Started inside a rank (by horovodrun or mpirun), it simply becomes the program.

What ``train`` has for failures and stops, the program gets too, without hvdtrain guessing
where its checkpoint is: ``--max-restarts`` (``launch.restarts``: the same classification,
host probing and records) restarts it with ``HVDTRAIN_ATTEMPT`` and ``HVDTRAIN_WORLD_SIZE``
set, and exit codes in ``--no-restart-on`` are final; SIGTERM/SIGUSR1 reach every rank as
SIGUSR1 (``Watchdog.forward_stop``), and its exit 75 is a stop on request, never restarted.
``--elastic`` runs a script written for Horovod elastic as ``train --elastic`` runs its own,
after ``launch.user_elastic``'s checks (``--min-np``, the slots, ``--discovery-script``).
"""

from __future__ import annotations

import os
from typing import Any

import click

from hvdtrain.commands.options import (
    discovery_script_option,
    dry_run_option,
    elastic_options,
    launch_options,
    launch_settings,
    no_restart_on_option,
    placement_options,
    placement_request,
    program_final_codes,
    restart_options,
    restart_policy,
    verbosity_options,
)
from hvdtrain.commands.precedence import config_option, mirror_env
from hvdtrain.commands.render import fault_tolerance, show_dry_run
from hvdtrain.launch.job import (
    check_program,
    job_command,
    layout_for,
    where_logs_are,
)
from hvdtrain.launch.rank_env import detect_rank, refuse_bare_srun_task
from hvdtrain.launch.restarts import run_with_restarts
from hvdtrain.launch.user_elastic import elastic_notes, elastic_plan
from hvdtrain.log import logger


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@config_option
@placement_options
@launch_options
@restart_options
@no_restart_on_option
@elastic_options
@discovery_script_option
@dry_run_option
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Where rank logs and status go (default: runs/<timestamp>).")
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
@verbosity_options
def launch(program: tuple[str, ...], run_dir: str | None, dry_run: bool, **kw: Any) -> None:
    """Plan and launch your own Horovod program: hvdtrain launch -np 2 -- python x.py."""
    argv = list(program[1:] if program and program[0] == "--" else program)
    if not argv:
        raise click.UsageError("give the program to run after --")
    if detect_rank() is not None:
        os.execvp(argv[0], argv)  # already a rank: just become the program
    refuse_bare_srun_task()
    policy = restart_policy(kw, program_final_codes(kw))  # bad values: before anything runs
    check_program(argv[0])
    settings = launch_settings(kw, forward_stop=True)
    # --elastic: --min-np, the slots on offer, a user's discovery script (launch.user_elastic)
    the_plan = elastic_plan(placement_request(kw), settings.elastic, policy.max_restarts)
    layout = layout_for(run_dir)
    if dry_run:
        notes = fault_tolerance(policy, settings.watchdog) + (elastic_notes(
            settings.elastic, layout.root, the_plan.placement.size) if settings.elastic else [])
        show_dry_run(the_plan, job_command(the_plan, argv, settings, layout), notes)
        return
    result = run_with_restarts(the_plan, lambda _attempt: argv, settings, layout, policy)
    logger.info("%d ranks finished in %.1f s; logs in %s", len(result.ranks),
                result.wall_seconds, where_logs_are(result, layout))


mirror_env(launch)
