"""``hvdtrain evaluate``: metrics of a checkpoint on a data set, sharded across ranks.

Launches like ``train`` (local ranks, a hostfile, or run as a rank under horovodrun/mpirun:
``detect_rank``), with the same placement and launch options. The launching side checks the
checkpoint and the data first (``inference.runner.prepare``), so a wrong file, feature count or
label is one line before any rank starts. Also home of ``launch_inference``, which ``predict``
shares.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from typing import Any

import click

from hvdtrain import catalog
from hvdtrain.cluster.planning import make_plan
from hvdtrain.commands.options import (
    choice,
    dry_run_option,
    launch_options,
    launch_settings,
    placement_options,
    placement_request,
    stacked,
    verbosity_options,
)
from hvdtrain.commands.render import show_dry_run
from hvdtrain.launch.job import job_command, layout_for, run_supervised, where_logs_are
from hvdtrain.launch.rank_env import detect_rank, refuse_bare_srun_task
from hvdtrain.log import logger

inference_options = stacked([
    click.option("--checkpoint", required=True, type=str,
                 help="A checkpoint file (checkpoints/epoch-NNNN.ckpt, best.ckpt) or a run "
                 "directory (its newest checkpoint)."),
    click.option("--data", required=True, type=str,
                 help=f"{', '.join(catalog.DATASETS.names())} or a "
                 f"{'/'.join(catalog.DATA_FILES.names())} file."),
    choice(catalog.SPLITS, default="auto", show_default=True,
           help="; ".join(f"{c.name}: {c.help}" for c in catalog.SPLITS) + "."),
    click.option("--label-column", type=str, default=None,
                 help="Label column of a CSV file (default: the training run's)."),
    click.option("--batch-size", type=int, default=1024, show_default=True,
                 help="Samples per batch (the same batches at any rank count)."),
    click.option("--run-dir", type=click.Path(file_okay=False), default=None,
                 help="Rank logs (default: a temporary directory, removed after success)."),
])


def rank_program(name: str) -> list[str]:
    """What every rank runs: this command line, without --dry-run."""
    return [sys.executable, "-m", "hvdtrain", name, *(a for a in sys.argv[2:] if a != "--dry-run")]


def launch_inference(name: str, kw: dict[str, Any], request: Any, dry_run: bool) -> None:
    """Check, then launch the ranks of ``name`` (or, inside a rank, be one)."""
    from hvdtrain.inference.runner import prepare, run_rank

    if detect_rank() is not None:
        run_rank(request)
        return
    refuse_bare_srun_task()
    card, samples = prepare(request)  # every input error before any rank starts
    the_plan = make_plan(placement_request(kw))
    settings = launch_settings(kw, require_ready=True)
    temporary = kw["run_dir"] is None
    root = kw["run_dir"] or tempfile.mkdtemp(prefix=f"hvdtrain-{name}-")
    layout = layout_for(root)
    program = rank_program(name)
    if dry_run:
        show_dry_run(the_plan, job_command(the_plan, program, settings, layout))
        if temporary:
            shutil.rmtree(root, ignore_errors=True)
        return
    logger.info("%s %s on %s samples of %s; %d ranks from %s", name, card.describe(), samples,
                request.data, the_plan.placement.size, the_plan.source.description)
    result = run_supervised(the_plan, program, settings, layout)
    if temporary:
        shutil.rmtree(root, ignore_errors=True)
    else:
        logger.info("rank logs in %s", where_logs_are(result, layout))


@click.command(context_settings={"show_default": False})
@inference_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (loss, "
              "accuracy, ...).")
@placement_options
@launch_options
@dry_run_option
@verbosity_options
def evaluate(dry_run: bool, as_json: bool, **kw: Any) -> None:
    """Loss and accuracy of a checkpoint on a data set (binary: precision, recall, F1,
    ROC AUC; all: a confusion matrix), sharded across ranks and reduced.

    \b
    hvdtrain evaluate --checkpoint runs/exp1 --data digits            # its validation split
    hvdtrain evaluate --checkpoint runs/exp1 --data new.csv -np 2 --json
    """
    from hvdtrain.inference.runner import Request

    request = Request("evaluate", kw["checkpoint"], kw["data"], kw["split"], kw["label_column"],
                      kw["batch_size"], json=as_json)
    launch_inference("evaluate", kw, request, dry_run)
