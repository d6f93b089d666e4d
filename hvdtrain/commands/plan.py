"""``hvdtrain plan``: where every rank goes, and exactly what a launch with these options runs.

It takes the same placement and launch options as ``train``, builds the command through the
same ``launch.job.job_command``, and shows it; ``--json`` gives the same as data. The commands
for starting the ranks by hand (``horovodrun``/``mpirun`` ... ``hvdtrain train``) come from the
same builder.
"""

from __future__ import annotations

import json
from typing import Any

import click

from hvdtrain.cluster.planning import make_plan
from hvdtrain.commands.options import (
    launch_options,
    launch_settings,
    placement_options,
    placement_request,
    train_program,
)
from hvdtrain.commands.precedence import config_option, mirror_env
from hvdtrain.commands.render import command_line, show_plan
from hvdtrain.launch.job import job_command, layout_for, manual_commands

BY_HAND_PROGRAM = ["hvdtrain", "train"]


@click.command()
@config_option
@placement_options
@launch_options
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="The run directory the launch would use (default: a new runs/<timestamp>).")
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object.")
def plan(json_output: bool, run_dir: str | None, **kw: Any) -> None:
    """Show the placement (rank → host, local rank, GPU) and the launch command."""
    the_plan = make_plan(placement_request(kw))
    settings = launch_settings(kw, require_ready=True)
    command = job_command(the_plan, train_program(), settings, layout_for(run_dir))
    by_hand = manual_commands(the_plan, BY_HAND_PROGRAM, settings)
    if json_output:
        click.echo(json.dumps({
            "size": the_plan.placement.size,
            "source": the_plan.source.description,
            "hosts": [h.as_json() for h in the_plan.hosts],
            "ranks": [r.as_json() for r in the_plan.placement.ranks],
            "launch": {"argv": command.argv, "env": command.env},
            "commands": {name: c.argv for name, c in by_hand.items()},
            "commands_env": {name: c.env for name, c in by_hand.items()},
        }, indent=2))
        return
    show_plan(the_plan)
    click.echo("\n'hvdtrain train' with these options runs exactly:")
    click.echo(f"  {command_line(command)}")
    click.echo("\nor start the ranks yourself (each then trains as a worker):")
    for name, by_hand_command in by_hand.items():
        click.echo(f"  [{name}] {command_line(by_hand_command)}")


mirror_env(plan)
