"""``hvdtrain predict``: distributed batch inference into one CSV or JSONL file.

Each rank predicts its batches; rank 0 writes every row, in input order, to one file that
appears complete or not at all. The same launch modes and options as ``train`` and
``evaluate`` (``evaluate.launch_inference``).
"""

from __future__ import annotations

from typing import Any

import click

from hvdtrain import catalog
from hvdtrain.commands.evaluate import inference_options, launch_inference
from hvdtrain.commands.options import (
    dry_run_option,
    launch_options,
    placement_options,
    verbosity_options,
)


@click.command(context_settings={"show_default": False})
@inference_options
@click.option("--output", required=True, type=str,
              help=f"The predictions file: {', '.join(catalog.PREDICTION_FILES.names())} "
              "(index,prediction,prob_<class>...).")
@placement_options
@launch_options
@dry_run_option
@verbosity_options
def predict(dry_run: bool, **kw: Any) -> None:
    """Predict a data set with a checkpoint, sharded across ranks, into one file.

    \b
    hvdtrain predict --checkpoint runs/exp1 --data new.csv --output preds.csv -np 2
    """
    from hvdtrain.inference.runner import Request

    request = Request("predict", kw["checkpoint"], kw["data"], kw["split"], kw["label_column"],
                      kw["batch_size"], output=kw["output"])
    launch_inference("predict", kw, request, dry_run)
