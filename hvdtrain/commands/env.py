"""``hvdtrain env`` (alias ``doctor``): versions, MPI, Horovod's build, and fixes."""

from __future__ import annotations

import json
import sys

import click

from hvdtrain.commands.options import verbosity_options
from hvdtrain.diagnostics import collect_report, render_report
from hvdtrain.errors import ExitCode


@click.command("env")
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object.")
@verbosity_options
def env_command(json_output: bool) -> None:
    """Versions, MPI, what Horovod was built with, and fixes for any problem found."""
    report = collect_report()
    click.echo(json.dumps(report, indent=2) if json_output else render_report(report))
    if report["problems"]:
        sys.exit(ExitCode.ENV_PROBLEMS)
