"""The ``hvdtrain`` command line: thin Click commands over library calls.

Each command parses options, builds a typed request, makes one library call and renders the
result. Errors from the library (``HvdtrainError``) become one line plus a hint and a distinct
exit code; no command shows a traceback for a user mistake. Importing this module imports no
ML framework (a test checks ``sys.modules``): heavy imports live in the rank processes.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from hvdtrain import __version__
from hvdtrain.config import config_option, mirror_env
from hvdtrain.errors import HvdtrainError
from hvdtrain.options import (
    controller_option,
    launch_options,
    launch_settings,
    launcher_option,
    placement_options,
    placement_request,
    show_plan,
)


class _Group(click.Group):
    """Turns ``HvdtrainError`` into a one-line message and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HvdtrainError as exc:
            click.echo(f"hvdtrain: error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hvdtrain: hint: {exc.hint}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hvdtrain")
def main() -> None:
    """Data-parallel training on Horovod: plan, launch, train.

    \b
    hvdtrain plan -np 2               show where every rank and GPU goes
    hvdtrain train -np 2              train the default model on 2 ranks
    hvdtrain launch -np 2 -- python my_hvd_script.py
    hvdtrain env                      what is installed and what Horovod was built with
    """


@main.command()
@config_option
@placement_options
@launcher_option
@controller_option
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object.")
def plan(json_output: bool, **kw: Any) -> None:
    """Show the placement (rank → host, local rank, GPU) and the launch commands."""
    from hvdtrain.launch.commands import detect_mpi_flavour, horovodrun_command, mpirun_command
    from hvdtrain.launch.job import LaunchSettings, make_plan, resolve_backend

    the_plan = make_plan(placement_request(kw))
    program = ["hvdtrain", "train"]
    flavour = detect_mpi_flavour() or "openmpi"
    resolve_backend(LaunchSettings(kw["launcher"], kw["controller"]), mpi_available=True)
    controller = "gloo" if kw["controller"] == "gloo" else "mpi"
    is_root = os.geteuid() == 0
    commands = {
        "horovodrun": horovodrun_command(the_plan.placement, program, controller,
                                         is_root=is_root),
        "mpirun": mpirun_command(the_plan.placement, program, flavour, is_root=is_root),
    }
    if json_output:
        click.echo(json.dumps({
            "size": the_plan.placement.size,
            "source": the_plan.source.description,
            "hosts": [h.as_json() for h in the_plan.hosts],
            "ranks": [r.as_json() for r in the_plan.placement.ranks],
            "commands": {name: command.argv for name, command in commands.items()},
        }, indent=2))
        return
    show_plan(the_plan)
    click.echo("\nlaunch with either:")
    for name, command in commands.items():
        click.echo(f"  [{name}] {shlex.join(command.argv)}")


mirror_env(plan)


@main.group()
def hosts() -> None:
    """Hostfile tools."""


@hosts.command("check")
@click.argument("hostfile", type=str)
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object.")
def hosts_check(hostfile: str, json_output: bool) -> None:
    """Lint HOSTFILE: list every problem (file:line), then a summary."""
    from hvdtrain.cluster.hosts import read_hostfile

    result = read_hostfile(hostfile)
    slots = sum(h.slots for h in result.hosts)
    if json_output:
        click.echo(json.dumps({"file": hostfile, "ok": not result.problems,
                               "problems": result.problems,
                               "hosts": [h.as_json() for h in result.hosts], "slots": slots},
                              indent=2))
    else:
        for problem in result.problems:
            click.echo(f"error: {problem}")
        status = "OK" if not result.problems else f"{len(result.problems)} problem(s)"
        click.echo(f"{hostfile}: {status}; {len(result.hosts)} valid host(s), {slots} slot(s)")
        for host in result.hosts:
            click.echo(f"  {host.name}: {host.slots} slot(s), gpus {','.join(map(str, host.gpus))}")
    if result.problems:
        sys.exit(3)


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@config_option
@placement_options
@launch_options
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Where rank logs and status go (default: runs/<timestamp>).")
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
def launch(program: tuple[str, ...], run_dir: str | None, dry_run: bool, **kw: Any) -> None:
    """Plan and launch your own Horovod program: hvdtrain launch -np 2 -- python x.py."""
    from hvdtrain.launch.job import build_command, make_plan, new_run_dir
    from hvdtrain.launch.job import launch as run
    from hvdtrain.launch.rank_env import detect_rank
    from hvdtrain.render import command_line

    argv = list(program[1:] if program and program[0] == "--" else program)
    if not argv:
        raise click.UsageError("give the program to run after --")
    if detect_rank() is not None:
        os.execvp(argv[0], argv)  # already a rank: just become the program
    the_plan = make_plan(placement_request(kw))
    settings = launch_settings(kw)
    if dry_run:
        show_plan(the_plan)
        click.echo("\n" + command_line(build_command(the_plan, argv, settings)))
        return
    directory = Path(run_dir) if run_dir else new_run_dir()
    result = run(the_plan, argv, settings, directory)
    click.echo(f"hvdtrain: {len(result.ranks)} ranks finished in {result.wall_seconds:.1f} s; "
               f"logs in {directory / 'logs'}", err=True)


mirror_env(launch)


@main.command("env")
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object.")
def env_command(json_output: bool) -> None:
    """Versions, MPI, what Horovod was built with, and fixes for any problem found."""
    from hvdtrain.diagnostics import collect_report, render_report

    report = collect_report()
    click.echo(json.dumps(report, indent=2) if json_output else render_report(report))
    if report["problems"]:
        sys.exit(1)


main.add_command(env_command, "doctor")


def _register_train() -> None:
    from hvdtrain.training.cli import train

    main.add_command(train)


_register_train()
