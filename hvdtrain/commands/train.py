"""``hvdtrain train``: launch ranks (or, inside a rank, be one) and train.

One command for every way users start it: run directly, it plans and launches its own ranks
(each running ``hvdtrain train`` with the options resolved here, see
``options.options_for_ranks``); started by horovodrun or mpirun, it notices
``HOROVOD_RANK``/``OMPI_COMM_WORLD_RANK``/``PMI_RANK``/``PMIX_RANK`` and trains as a worker.
``TrainConfig`` validates every option on the launching side, before any rank starts, and
again in each rank (same code, same messages).

Options are resolved once, by the launcher: a rank on another host has neither the launcher's
``HVDTRAIN_*`` variables nor its ``--config`` file nor its working directory, so re-parsing
there would silently train something else.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from hvdtrain import catalog
from hvdtrain.cluster.planning import make_plan
from hvdtrain.commands.options import (
    choice,
    dry_run_option,
    elastic_options,
    launch_options,
    launch_settings,
    options_for_ranks,
    options_in_rank,
    placement_options,
    placement_request,
    restart_options,
    restart_policy,
    stacked,
    train_program,
    verbosity_options,
    with_absolute_paths,
)
from hvdtrain.commands.precedence import config_option, mirror_env
from hvdtrain.commands.render import fault_tolerance, show_dry_run
from hvdtrain.config import TrainConfig
from hvdtrain.errors import TrainingStoppedError
from hvdtrain.launch.job import job_command, layout_for, where_logs_are
from hvdtrain.launch.network import is_local
from hvdtrain.launch.protocol import RunLayout
from hvdtrain.launch.rank_env import detect_rank, refuse_bare_srun_task
from hvdtrain.launch.results import fetch_results, rank_hosts, remote_hosts, where_results_are
from hvdtrain.log import logger
from hvdtrain.pretrained import FINE_TUNING_DEFAULTS, is_pretrained

STOP_EXIT_GRACE_S = 3.0  # ranks other than 0 wait this long before exiting 75 (see train())


def _names(registry: catalog.Registry[Any]) -> str:
    return "; ".join(f"{entry.name}: {entry.help}" for entry in registry)


def _ft(name: str) -> str:
    return f"{FINE_TUNING_DEFAULTS[name]} for hf:/keras-hub: models"


_train_options = stacked([
    choice(catalog.FRAMEWORKS, default="torch", show_default=True),
    click.option("--model", type=str, default="mlp", show_default=True,
                 help=f"{_names(catalog.MODELS)}; {catalog.USER_MODEL_HELP}; or a pretrained "
                 "language model to fine-tune: hf:DIR (a transformers save_pretrained "
                 "directory or a model id in the local cache; --framework torch) or "
                 "keras-hub:DIR (a KerasHub preset; --framework tensorflow)."),
    click.option("--data", type=str, default="synthetic", show_default=True,
                 help=f"{_names(catalog.DATASETS)}; or a "
                 f"{'/'.join(catalog.DATA_FILES.names())} file."),
    click.option("--label-column", type=str, default="label", show_default=True,
                 help="Label column of a CSV/TSV/JSONL file."),
    click.option("--text-column", type=str, default="text", show_default=True,
                 help="Text column, for a pretrained model's .jsonl/.csv/.tsv data."),
    click.option("--text-pair-column", type=str, default=None,
                 help="Second text column, for sentence-pair tasks."),
    click.option("--max-length", type=int, default=128, show_default=True,
                 help="Tokens per text for a pretrained model; longer texts are truncated, "
                 "batches padded to their longest row."),
    click.option("--epochs", type=int, default=None, help=f"[default: 10; {_ft('epochs')}]"),
    click.option("--batch-size", type=int, default=None,
                 help=f"Per rank. [default: 64; {_ft('batch_size')}]"),
    click.option("--lr", type=float, default=None,
                 help=f"Base learning rate. [default: 0.001; {_ft('lr')}]"),
    choice(catalog.LR_SCALINGS, default=None,
           help=f"{_names(catalog.LR_SCALINGS)}. [default: linear; {_ft('lr_scaling')}]"),
    choice(catalog.LR_SCHEDULES, default=None,
           help=f"Per optimizer step: {_names(catalog.LR_SCHEDULES)}. "
           f"[default: constant; {_ft('lr_schedule')}]"),
    click.option("--warmup-steps", type=int, default=None,
                 help="Linear warm-up from 0 over this many optimizer steps."),
    click.option("--warmup-ratio", type=float, default=None,
                 help=f"Or over this fraction of all steps. [default: 0; {_ft('warmup_ratio')}]"),
    click.option("--clip-grad-norm", type=float, default=0.0, show_default=True,
                 help="Clip the averaged gradient to this global norm (0: off)."),
    choice(catalog.PRECISIONS, default="fp32", show_default=True,
           help=_names(catalog.PRECISIONS)),
    click.option("--freeze-embeddings", is_flag=True,
                 help="Pretrained models: do not train the embeddings."),
    click.option("--freeze-layers", type=int, default=0, show_default=True,
                 help="Pretrained models: do not train the first K blocks."),
    click.option("--warmup-epochs", type=float, default=0.0, show_default=True,
                 help="Gradual warm-up to the scaled lr."),
    choice(catalog.OPTIMIZERS, default=None,
           help=f"{_names(catalog.OPTIMIZERS)}. [default: adam; {_ft('optimizer')}]"),
    click.option("--weight-decay", type=float, default=None,
                 help=f"Not applied to biases and norm weights. [default: 0; "
                 f"{_ft('weight_decay')}]"),
    choice(catalog.COMPRESSIONS, default="none", show_default=True,
           help=_names(catalog.COMPRESSIONS)),
    click.option("--powersgd-rank", type=int, default=4, show_default=True,
                 help="--compression powersgd: rank of the low-rank factors P and Q."),
    click.option("--powersgd-warmup-steps", type=int, default=0, show_default=True,
                 help="--compression powersgd: average the first K optimizer steps in full "
                 "precision."),
    choice(catalog.SPARSE_EMBEDDINGS, default="auto", show_default=True,
           help="Send an embedding's gradient as the rows each step touched (exact; fewer "
           "bytes for language models on a few nodes; torch). auto: when that is at most "
           "half the dense allreduce's bytes."),
    click.option("--grad-accumulation", "--accumulate-steps", "grad_accumulation", type=int,
                 default=1, show_default=True,
                 help="Micro-batches per optimizer step: one allreduce per N (Horovod's "
                 "backward_passes_per_step)."),
    click.option("--seed", type=int, default=42, show_default=True),
    click.option("--val-fraction", type=float, default=0.2, show_default=True),
    click.option("--early-stopping-patience", type=int, default=0, show_default=True,
                 help="Stop after this many epochs without val_loss improvement (0: off)."),
    click.option("--run-dir", type=click.Path(file_okay=False), default=None,
                 help="Metrics, TensorBoard events, checkpoints, summary.json and rank "
                 "logs (default: runs/<timestamp>)."),
    click.option("--fetch-results/--no-fetch-results", default=None,
                 help="At the end, copy rank 0's results and every rank's logs back into the "
                 "run directory here over ssh (default: when another host does not share it)."),
    click.option("--checkpoint-every", type=int, default=1, show_default=True,
                 help="Epochs between checkpoints (0: never)."),
    click.option("--checkpoint-every-steps", type=int, default=0, show_default=True,
                 help="Also checkpoint every K steps within an epoch (0: only at epoch ends); "
                 "resuming from one continues the epoch, at any world size."),
    click.option("--keep-checkpoints", type=int, default=3, show_default=True,
                 help="Keep the last K epoch checkpoints (+ best, + the newest step one)."),
    click.option("--resume", type=str, default=None,
                 help="'latest' (newest checkpoint in --run-dir), 'auto' (latest if there is "
                 "one, else start: for requeued jobs) or a checkpoint path."),
    choice(catalog.ON_NONFINITE, default="stop", show_default=True,
           help=f"When the loss or gradient becomes NaN/inf: {_names(catalog.ON_NONFINITE)}."),
    click.option("--commit-every-steps", type=int, default=10, show_default=True,
                 help="--elastic: keep model, optimizer and sampler position in memory every "
                 "K steps (and at epoch ends); a failed rank costs at most K steps."),
    click.option("--log-every-seconds", type=float, default=30.0, show_default=True,
                 help="When rank 0's output is not a terminal (a log file, CI, Slurm, a "
                 "pipe): a progress line this often within an epoch, no bar (0: epoch lines "
                 "only)."),
    click.option("--record-step-losses", is_flag=True, hidden=True),
    click.option("--record-samples", is_flag=True, hidden=True),
    click.option("--step-delay", type=float, default=0.0, hidden=True),
])


def resuming(program: list[str], resume: str | None, run_dir: Path) -> list[str]:
    """The rank command line of a restart: the same, resuming in the same run directory
    (Click keeps an option's last value)."""
    if resume is None:
        return program
    return [*program, "--resume", resume, "--run-dir", str(run_dir)]


def train_config(kw: dict[str, Any]) -> TrainConfig:
    """The typed, validated config from the options; options nobody set take the fine-tuning
    defaults for a pretrained model (``pretrained.FINE_TUNING_DEFAULTS``), else TrainConfig's."""
    fields = TrainConfig.__dataclass_fields__
    chosen = {k: v for k, v in kw.items() if k in fields and v is not None}
    if is_pretrained(str(chosen.get("model", ""))):
        defaults = dict(FINE_TUNING_DEFAULTS)
        if chosen.get("warmup_steps") or chosen.get("warmup_epochs"):
            defaults.pop("warmup_ratio")  # the user chose another warm-up
        chosen = {**defaults, **chosen}
    return TrainConfig(**chosen)


def _check_elastic(kw: dict[str, Any], policy: Any) -> None:
    from hvdtrain.errors import ConfigError

    if policy.max_restarts:
        raise ConfigError("--elastic and --max-restarts are two ways to survive a failed "
                          "host; choose one", hint="docs/FAULT_TOLERANCE.md compares them")
    if kw["commit_every_steps"] < 1:
        raise ConfigError(f"--commit-every-steps must be >= 1, got {kw['commit_every_steps']}")


def _launch_side(kw: dict[str, Any], dry_run: bool) -> None:
    # NumPy (and, in a subprocess, the framework for a user's model): not for --help
    from hvdtrain.launch.restarts import with_hang_limit
    from hvdtrain.train_launcher.restarts import train_with_restarts
    from hvdtrain.train_launcher.validate import validate_run
    from hvdtrain.training.checkpoint import refuse_to_overwrite

    kw = with_absolute_paths(kw)
    config = train_config(kw)  # every option error before any rank starts
    # the ranks get what this resolved, model-dependent defaults included (fine-tuning ones for
    # a pretrained model), so a rank never decides a default on its own
    kw = {**kw, **{name: value for name, value in config.as_json().items()
                   if kw.get(name) is None and name in kw and name != "run_dir"}}
    the_plan = make_plan(placement_request(kw))
    layout = layout_for(kw["run_dir"])
    settings = replace(launch_settings(kw, require_ready=True, graceful_stop=True),
                       rank_options=options_for_ranks(kw, layout.root))
    policy = restart_policy(kw)
    if settings.elastic is not None:
        _check_elastic(kw, policy)
    settings = replace(settings, watchdog=with_hang_limit(settings.watchdog, policy))
    program = train_program()
    # the data, the model and the checkpoint to resume, as far as this host can see them
    elsewhere = not any(is_local(host.name) for host in the_plan.hosts)
    for note in validate_run(config, layout.root, data_may_be_elsewhere=elsewhere):
        if note.startswith("warning: "):
            logger.warning("%s", note)
        else:
            logger.info("note: %s", note)
    if dry_run:
        show_dry_run(the_plan, job_command(the_plan, program, settings, layout),
                     fault_tolerance(policy, settings.watchdog))
        return
    if kw["run_dir"]:
        refuse_to_overwrite(layout.root, kw["resume"])
    logger.info("%d ranks from %s; run dir %s", the_plan.placement.size,
                the_plan.source.description, layout.root)
    result = train_with_restarts(
        the_plan, lambda resume: resuming(program, resume, layout.root), settings, layout,
        policy, kw["resume"])
    ran = (f"the elastic job ({len(result.ranks)} rank processes) finished" if settings.elastic
           else f"{len(result.ranks)} ranks finished")
    planned = None if settings.elastic or (layout.root / "restarts.json").exists() else {
        slot.rank: slot.host for slot in the_plan.placement.ranks}
    hosts = rank_hosts(result.ranks, planned)
    results, logs = where_results_are(layout, hosts), where_logs_are(result, layout)
    if kw["fetch_results"] is not False and remote_hosts(layout, hosts):
        fetched = fetch_results(layout, hosts)
        for line in fetched.copied:
            logger.info("copied into %s from %s", layout.root, line)
        for line in fetched.failed:
            logger.warning("warning: could not copy results from %s; they stay there", line)
        if not fetched.failed:
            results = logs = f"{layout.root} (copied)"
    logger.info("%s in %.1f s; results in %s; rank logs in %s", ran, result.wall_seconds,
                results, logs)


@click.command(context_settings={"show_default": False})
@config_option
@_train_options
@restart_options
@placement_options
@launch_options
@elastic_options
@dry_run_option
@click.pass_context
@verbosity_options
def train(ctx: click.Context, dry_run: bool, **kw: Any) -> None:
    """Train a model data-parallel on Horovod (launches ranks, or runs as one)."""
    if detect_rank() is None:
        refuse_bare_srun_task()
        _launch_side(kw, dry_run)
        return
    kw = options_in_rank(kw, ctx)
    record_step_losses, record_samples, step_delay = (
        kw.pop("record_step_losses"), kw.pop("record_samples"), kw.pop("step_delay"))
    from hvdtrain.training.loop import LoopOptions
    from hvdtrain.training.worker import run_worker  # the rank's framework, loaded here

    try:
        run_worker(train_config(kw), LoopOptions(record_step_losses=record_step_losses,
                                                 record_samples=record_samples,
                                                 step_delay=step_delay),
                   elastic_commit_every=kw["commit_every_steps"] if kw["elastic"] else None)
    except TrainingStoppedError as stop:
        if RunLayout.from_env(os.environ) is None:
            raise  # no hvdtrain launcher (srun --mpi=pmix, mpirun): the rank says it all
        # under hvdtrain's launcher: one line here (rank 0's reaches the terminal); the
        # launcher adds the hint, once. The rank's final line, as an error's: at every level
        click.echo(f"hvdtrain: {stop.message}", err=True)
        found = detect_rank()
        if found is not None and found.rank != 0:
            # rank 0 leaves first: mpirun ends the whole job at the first non-zero exit, which
            # could cut off rank 0's last line and exit record. The checkpoint is complete by
            # now (every rank waited for it in a collective), so this only orders the exits.
            time.sleep(STOP_EXIT_GRACE_S)
        sys.exit(stop.exit_code)


mirror_env(train)
