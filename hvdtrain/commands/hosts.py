"""``hvdtrain hosts check``: lint a hostfile, every problem with file:line, then a summary."""

from __future__ import annotations

import json
import sys

import click

from hvdtrain.cluster.hosts import read_hostfile
from hvdtrain.commands.options import verbosity_options
from hvdtrain.errors import HostfileError


@click.group()
def hosts() -> None:
    """Hostfile tools."""


@hosts.command("check")
@click.argument("hostfile", type=str)
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object.")
@verbosity_options
def hosts_check(hostfile: str, json_output: bool) -> None:
    """Lint HOSTFILE: list every problem (file:line), then a summary."""
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
        sys.exit(HostfileError.exit_code)
