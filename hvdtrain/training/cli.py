"""``hvdtrain train``: launch ranks (or, inside a rank, be one) and train.

One command for every way users start it: run directly, it plans and launches its own ranks
(re-running this same command line in each); started by horovodrun or mpirun, it notices
``HOROVOD_RANK``/``OMPI_COMM_WORLD_RANK``/``PMI_RANK``/``PMIX_RANK`` and trains as a worker.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from hvdtrain.config import config_option, mirror_env
from hvdtrain.options import launch_options, placement_options, stacked
from hvdtrain.training.config import (
    BUILTIN_DATA,
    COMPRESSIONS,
    FRAMEWORKS,
    MODELS,
    OPTIMIZERS,
)

_train_options = stacked([
    click.option("--framework", type=click.Choice(FRAMEWORKS), default="torch",
                 show_default=True),
    click.option("--model", type=str, default="mlp", show_default=True,
                 help=f"{', '.join(MODELS)} or your own 'module.path:factory' returning a "
                 "model. mlp: in→256→256→out; cnn: conv net for 8×8 digits; transformer: "
                 "byte-token encoder for text."),
    click.option("--data", type=str, default="synthetic", show_default=True,
                 help=f"{', '.join(BUILTIN_DATA)} (synthetic* are generated, not real data), "
                 "or a .csv/.npz/.jsonl file."),
    click.option("--label-column", type=str, default="label", show_default=True,
                 help="Label column of a CSV file."),
    click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True),
    click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                 help="Per rank."),
    click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3,
                 show_default=True, help="Base learning rate."),
    click.option("--lr-scaling", type=click.Choice(["linear", "none"]), default="linear",
                 show_default=True, help="linear: lr × ranks (Horovod recipe)."),
    click.option("--warmup-epochs", type=click.FloatRange(min=0), default=0.0,
                 show_default=True, help="Gradual warm-up to the scaled lr."),
    click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam",
                 show_default=True),
    click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0),
    click.option("--compression", type=click.Choice(COMPRESSIONS), default="none",
                 show_default=True, help="fp16: overflow-safe (pre-scaled, fp32 retry)."),
    click.option("--grad-accumulation", type=click.IntRange(min=1), default=1,
                 show_default=True, help="Horovod backward_passes_per_step."),
    click.option("--seed", type=int, default=42, show_default=True),
    click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                 default=0.2, show_default=True),
    click.option("--early-stopping-patience", type=click.IntRange(min=0), default=0,
                 show_default=True,
                 help="Stop after this many epochs without val_loss improvement (0: off)."),
    click.option("--run-dir", type=click.Path(file_okay=False), default=None,
                 help="Metrics, TensorBoard events, checkpoints, summary.json and rank "
                 "logs (default: runs/<timestamp>)."),
    click.option("--checkpoint-every", type=click.IntRange(min=0), default=1,
                 show_default=True, help="Epochs between checkpoints (0: never)."),
    click.option("--keep-checkpoints", type=click.IntRange(min=1), default=3,
                 show_default=True, help="Keep the last K epoch checkpoints (+ best)."),
    click.option("--resume", type=str, default=None,
                 help="'latest' (newest checkpoint in --run-dir) or a checkpoint path."),
    click.option("--record-step-losses", is_flag=True, hidden=True),
])


def _train_config(kw: dict[str, Any]) -> Any:
    """The typed config from the options (validated here: on the launcher and in each rank)."""
    from hvdtrain.training.config import TrainConfig

    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{k: v for k, v in kw.items() if k in fields and v is not None})


def _launch_side(kw: dict[str, Any], dry_run: bool) -> None:
    from hvdtrain.errors import ConfigError
    from hvdtrain.frameworks.registry import ADAPTERS
    from hvdtrain.launch.job import build_command, launch, make_plan, new_run_dir
    from hvdtrain.options import launch_settings, placement_request, show_plan
    from hvdtrain.render import command_line
    from hvdtrain.training.datasets import check_data_source

    if kw["framework"] not in ADAPTERS:  # fail here, once, not in every rank
        raise ConfigError(f"framework {kw['framework']!r} has no adapter yet "
                          f"(available: {', '.join(ADAPTERS)})")
    check_data_source(kw["data"])
    _train_config(kw)  # every option error before any rank starts
    the_plan = make_plan(placement_request(kw))
    settings = launch_settings(kw)
    settings = replace(settings, watchdog=replace(settings.watchdog, require_ready=True))
    program = [sys.executable, "-m", "hvdtrain", *sys.argv[1:]]
    if dry_run:
        show_plan(the_plan)
        click.echo("\n" + command_line(build_command(the_plan, program, settings)))
        return
    from hvdtrain.training.checkpoint import refuse_to_overwrite

    if kw["run_dir"]:
        refuse_to_overwrite(Path(kw["run_dir"]), kw["resume"])
    run_dir = Path(kw["run_dir"]) if kw["run_dir"] else new_run_dir()
    click.echo(f"hvdtrain: {the_plan.placement.size} ranks from {the_plan.source.description}; "
               f"run dir {run_dir}", err=True)
    launch(the_plan, program, settings, run_dir)


@click.command(context_settings={"show_default": False})
@config_option
@_train_options
@placement_options
@launch_options
def train(dry_run: bool, record_step_losses: bool, **kw: Any) -> None:
    """Train a model data-parallel on Horovod (launches ranks, or runs as one)."""
    from hvdtrain.launch.rank_env import detect_rank

    if detect_rank() is None:
        _launch_side(kw, dry_run)
        return
    from hvdtrain.launch.worker import run_worker

    run_worker(_train_config(kw), record_step_losses)


mirror_env(train)
