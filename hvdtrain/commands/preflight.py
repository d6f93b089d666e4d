"""``hvdtrain preflight``: check every host of the plan before a launch, in parallel.

Thin: the plan comes from the shared placement options, ``launch.preflight.run.run_preflight``
does the work, this renders its records (a table, one line per failure with its fix, or
``--json``) and turns a failure into exit status 5.

The per-host limit is ``--timeout`` as on the command line, but its environment variable is
``HVDTRAIN_HOST_TIMEOUT``: ``HVDTRAIN_TIMEOUT`` is ``train``'s wall-clock limit for a whole job.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from hvdtrain.atomic import atomic_write_text
from hvdtrain.cluster.hosts import good_hostfile_text
from hvdtrain.cluster.planning import make_plan
from hvdtrain.commands.options import placement_options, placement_request, verbosity_options
from hvdtrain.commands.precedence import config_option, mirror_env
from hvdtrain.commands.render import table
from hvdtrain.errors import ExitCode
from hvdtrain.launch.preflight.report import PreflightReport
from hvdtrain.launch.preflight.run import run_preflight


def _render(report: PreflightReport) -> str:
    rows = [(c.host, c.check, "ok" if c.ok else "FAIL", c.detail) for c in report.checks]
    lines = [table(("host", "check", "result", "detail"), rows)]
    lines += [f"note: {note}" for note in report.notes]
    failures = report.failures
    if failures:
        lines.append("")
        lines += [f"FAIL {c.failure_line()}" for c in failures]
        lines.append(f"preflight: {len(failures)} check(s) failed; passed hosts: "
                     f"{', '.join(report.passed_hosts()) or 'none'} ({report.elapsed_s:.1f} s)")
    else:
        lines.append(f"preflight: all {len(report.checks)} checks passed on "
                     f"{len(report.hosts)} host(s) ({report.elapsed_s:.1f} s)")
    return "\n".join(lines)


@click.command()
@config_option
@placement_options
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Where the run will write (checked on every host; default: ./runs, where "
              "new run directories go).")
@click.option("--timeout", "host_timeout", type=click.FloatRange(min=1), default=20.0,
              show_default=True, help="Seconds per host for all its checks.")
@click.option("--mpi/--no-mpi", "mpi_smoke", default=True, show_default=True,
              help="Finish with an MPI allreduce across every rank of the plan (only when "
              "every host passed).")
@click.option("--write-good-hostfile", type=click.Path(dir_okay=False), default=None,
              help="Write the hosts that passed here ('host slots=N' lines), pass or fail.")
@click.option("--json", "json_output", is_flag=True, help="Print one JSON object.")
@verbosity_options
def preflight(run_dir: str | None, host_timeout: float, mpi_smoke: bool,
              write_good_hostfile: str | None, json_output: bool, **kw: Any) -> None:
    """Check every host of the plan before a launch: name resolution, password-less ssh
    (BatchMode), the same Python, hvdtrain, Horovod (and its build), torch and TensorFlow at
    the same path as here, a common subnet, a writable (and whether shared) run directory,
    then an MPI allreduce across all ranks.

    Exit status 0 when every check passed, 5 when any failed (each failure is one line: host,
    check and fix).
    """
    the_plan = make_plan(placement_request(kw))
    report = run_preflight(the_plan, Path(run_dir or "runs"), host_timeout, mpi_smoke=mpi_smoke)
    if write_good_hostfile:
        atomic_write_text(Path(write_good_hostfile),
                          good_hostfile_text(the_plan.hosts, report.passed_hosts()))
    if json_output:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        click.echo(_render(report))
        if write_good_hostfile:
            click.echo(f"wrote {len(report.passed_hosts())} host(s) to {write_good_hostfile}")
    if not report.ok:
        sys.exit(ExitCode.PREFLIGHT)


mirror_env(preflight)
