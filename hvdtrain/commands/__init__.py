"""The ``hvdtrain`` command line: thin Click commands over library calls, one module each.

Each command parses options, builds a typed request, makes one library call and renders the
result. Errors from the library (``HvdtrainError``) become one line plus a hint and a distinct
exit code; no command shows a traceback for a user mistake. Importing this package imports no
ML framework (a test checks ``sys.modules``): heavy imports live in the rank processes.

This is the top layer: nothing in ``hvdtrain`` imports it, and Click is imported nowhere else.
"""

from __future__ import annotations

from typing import Any

import click

from hvdtrain import __version__
from hvdtrain.commands.bench import bench
from hvdtrain.commands.env import env_command
from hvdtrain.commands.evaluate import evaluate
from hvdtrain.commands.export import export
from hvdtrain.commands.hosts import hosts
from hvdtrain.commands.launch import launch
from hvdtrain.commands.plan import plan
from hvdtrain.commands.predict import predict
from hvdtrain.commands.preflight import preflight
from hvdtrain.commands.serve import serve
from hvdtrain.commands.train import train
from hvdtrain.errors import HvdtrainError


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
    hvdtrain plan -np 2               show where every rank and GPU goes, and the command
    hvdtrain train -np 2              train the default model on 2 ranks
    hvdtrain evaluate --checkpoint runs/X --data D      then predict, export
    hvdtrain launch -np 2 -- python my_hvd_script.py
    hvdtrain env                      what is installed and what Horovod was built with
    """


for command in (plan, hosts, launch, train, evaluate, predict, export, env_command,
                preflight, bench):
    main.add_command(command)
main.add_command(env_command, "doctor")
main.add_command(serve)
