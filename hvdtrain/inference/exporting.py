"""``hvdtrain export``: the checkpoint's model as a file a serving process loads without
hvdtrain, plus ``PATH.json``, the sidecar that says how to feed it and read its output.

The sidecar holds the input spec (name, dtype, shape, kind, how text is encoded), the class
names in output column order, and the preprocessing: ``standardisation`` (``mean``, ``std``:
``x = (raw - mean) / std`` in float32, as training did), or none for text. The model itself
outputs class probabilities (binary: ``[1 - p, p]``). Both files are written atomically
(``hvdtrain.atomic``: a temporary name in the same directory, renamed when complete; the model
keeps its suffix there, Keras checks it), the sidecar first, so a failed export (a full disk:
one ``OutputError`` naming the file and the space left) leaves no half-written file and no
model without its sidecar; the framework is imported only here, in the export itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvdtrain import __version__
from hvdtrain.atomic import atomic_output, atomic_write_text
from hvdtrain.catalog import EXPORT_FORMATS
from hvdtrain.errors import ConfigError
from hvdtrain.inference.card import ModelCard, load_card
from hvdtrain.types import TEXT_LENGTH, TOKENS


@dataclass(frozen=True)
class ExportResult:
    model: Path
    sidecar: Path
    check: str


def sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + ".json")


def check_request(card: ModelCard, fmt: str, output: Path) -> None:
    """Every mistake before any work: format of the other framework, a suffix Keras refuses,
    a directory that does not exist."""
    choice = EXPORT_FORMATS.get(fmt)
    if choice.framework != card.framework:
        fitting = [c.name for c in EXPORT_FORMATS if c.framework == card.framework]
        raise ConfigError(f"--format {fmt} exports {choice.framework} checkpoints; "
                          f"{card.path} is a {card.framework} checkpoint",
                          hint=f"use --format {' or '.join(fitting)}")
    if fmt == "keras" and output.suffix != ".keras":
        raise ConfigError(f"--output {output}: a Keras file must end in .keras",
                          hint=f"e.g. --output {output.with_suffix('.keras')}")
    if not output.parent.is_dir():
        raise ConfigError(f"--output {output}: directory {output.parent} does not exist")
    if output.is_dir() and not choice.directory:
        raise ConfigError(f"--output {output} is a directory; give a file name")
    marker, what = (("saved_model.pb", "a SavedModel") if fmt == "savedmodel"
                    else ("config.json", "a save_pretrained directory"))
    if output.exists() and choice.directory and not (output / marker).exists():
        raise ConfigError(f"--output {output} exists and is not {what}; refusing to "
                          "replace it", hint="choose a new path")


def tokenizer_path(output: Path) -> Path:
    """Where an ONNX export of a language model keeps its tokenizer: beside the graph."""
    return output.with_name(output.name + ".tokenizer")


def _text_encoding(card: ModelCard, fmt: str, output: Path) -> str | None:
    if card.kind == "text":
        return f"UTF-8 bytes b -> token b + 1, cut or padded with 0 to {TEXT_LENGTH}"
    if card.kind != TOKENS:
        return None
    where = "in this directory" if fmt == "hf" else f"in {tokenizer_path(output).name}/ beside it"
    return (f"the model's tokenizer ({where}; transformers.AutoTokenizer.from_pretrained), "
            f"truncated to {card.config.max_length} tokens; x packs input_ids, attention_mask "
            "and token_type_ids as x[:, 0], x[:, 1], x[:, 2]")


def sidecar(card: ModelCard, fmt: str, output: Path, info: dict[str, Any]) -> dict[str, Any]:
    text = card.kind in ("text", TOKENS)
    standardisation = None if card.mean is None or card.std is None else {
        "mean": card.mean.tolist(), "std": card.std.tolist()}
    return {
        "format": fmt, "model_file": output.name, "framework": card.framework,
        "load": info["load"],
        "input": {"name": info["input_name"], "dtype": card.input_dtype,
                  "shape": [None, card.num_features], "kind": card.kind,
                  "image_shape": list(card.image_shape) if card.image_shape else None,
                  "text_encoding": _text_encoding(card, fmt, output),
                  "max_length": card.config.max_length if card.kind == TOKENS else None,
                  **info.get("input", {})},  # what an exporter says of its own input
        "preprocessing": None if text else "x = (raw - mean) / std, in float32",
        "standardisation": standardisation,
        "output": {"name": info["output_name"], "shape": [None, card.num_classes],
                   "meaning": "class probabilities, columns in class_names order; the "
                   "prediction is the column with the largest"},
        "class_names": list(card.class_names),
        "trained": {"checkpoint": str(card.path), "epoch": card.epoch,
                    "model": card.config.model, "data": card.config.data,
                    "seed": card.config.seed, "val_fraction": card.config.val_fraction,
                    **({"text_column": card.config.text_column,
                        "text_pair_column": card.config.text_pair_column,
                        "max_length": card.config.max_length} if card.kind == TOKENS else {})},
        "hvdtrain_version": __version__,
        "check": info["check"],
    }


def export(checkpoint: str, fmt: str, output: Path) -> ExportResult:
    card = load_card(checkpoint)
    check_request(card, fmt, output)
    exporter = EXPORT_FORMATS.load(fmt)
    meta = sidecar_path(output)
    sidecar_written = False
    try:
        # an older SavedModel directory (checked above) is replaced whole
        with atomic_output(output, keep_suffix=True) as tmp:
            info = exporter(card.config, card.stub(), card.path, tmp)
            if card.kind == TOKENS and fmt == "onnx":
                from hvdtrain.frameworks.torch.export import save_tokenizer

                save_tokenizer(card.config, tokenizer_path(output))
            atomic_write_text(meta, json.dumps(sidecar(card, fmt, output, info), indent=2)
                              + "\n")
            sidecar_written = True
    except BaseException:
        if sidecar_written:  # the model's rename failed: the sidecar describes nothing
            meta.unlink(missing_ok=True)
        raise
    return ExportResult(output, meta, str(info["check"]))
