"""``hvdtrain export``: a checkpoint as a self-contained model file plus a JSON sidecar
(input spec, class names, standardisation), for serving without hvdtrain. One process, no
ranks: the checkpoint's framework is imported for the export itself only.
"""

from __future__ import annotations

from pathlib import Path

import click

from hvdtrain import catalog
from hvdtrain.commands.options import choice, verbosity_options


@click.command(context_settings={"show_default": False})
@click.option("--checkpoint", required=True, type=str,
              help="A checkpoint file or a run directory (its newest checkpoint).")
@choice(catalog.EXPORT_FORMATS, required=True,
        help="; ".join(f"{c.name}: {c.help} [{c.framework}]" for c in catalog.EXPORT_FORMATS))
@click.option("--output", required=True, type=click.Path(path_type=Path),
              help="The model file (or SavedModel directory); the sidecar is OUTPUT.json.")
@verbosity_options
def export(checkpoint: str, format: str, output: Path) -> None:
    """Export a checkpoint's model for serving (torchscript/onnx: torch; savedmodel/keras:
    tensorflow); the model outputs class probabilities.

    \b
    hvdtrain export --checkpoint runs/exp1 --format onnx --output model.onnx
    """
    from hvdtrain.inference.exporting import export as run_export

    done = run_export(checkpoint, format, output)
    click.echo(f"hvdtrain: exported {done.model} ({format}) and {done.sidecar}; {done.check}")
