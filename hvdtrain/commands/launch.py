"""``hvdtrain launch -- PROGRAM``: plan and launch a user's own Horovod program, supervised.

Started inside a rank (by horovodrun or mpirun), it simply becomes the program.
"""

from __future__ import annotations

import os
from typing import Any

import click

from hvdtrain.cluster.planning import make_plan
from hvdtrain.commands.options import (
    dry_run_option,
    launch_options,
    launch_settings,
    placement_options,
    placement_request,
    verbosity_options,
)
from hvdtrain.commands.precedence import config_option, mirror_env
from hvdtrain.commands.render import show_dry_run
from hvdtrain.launch.job import (
    check_program,
    job_command,
    layout_for,
    run_supervised,
    where_logs_are,
)
from hvdtrain.launch.rank_env import detect_rank, refuse_bare_srun_task
from hvdtrain.log import logger


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@config_option
@placement_options
@launch_options
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
    check_program(argv[0])
    the_plan = make_plan(placement_request(kw))
    settings = launch_settings(kw)
    layout = layout_for(run_dir)
    if dry_run:
        show_dry_run(the_plan, job_command(the_plan, argv, settings, layout))
        return
    result = run_supervised(the_plan, argv, settings, layout)
    logger.info("%d ranks finished in %.1f s; logs in %s", len(result.ranks),
                result.wall_seconds, where_logs_are(result, layout))


mirror_env(launch)
