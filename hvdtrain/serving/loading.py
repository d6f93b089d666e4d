"""From ``--checkpoint`` or ``--model-dir`` to a ``Servable``, every mistake found first.

``locate`` runs before any port is bound or framework imported and raises one-line errors: no
such checkpoint or export, an export without its ``PATH.json`` sidecar (or a sidecar that is not
one), a TorchScript export (torch models are served by ONNX Runtime), a framework that is not
installed. ``load`` then does the slow part.

* ``--model-dir``: what ``hvdtrain export`` wrote: the model file (or SavedModel directory)
  itself, or a directory holding exactly one export with its sidecar (KServe's storage
  initializer puts a model in ``/mnt/models`` this way). The sidecar is the model card.
* ``--checkpoint``: exported first with ``hvdtrain export``'s own code (ONNX for torch, Keras
  for TensorFlow) into ``.hvdtrain-serve/`` beside the checkpoint, named by a hash of the
  checkpoint and hvdtrain's version so a restart reuses it; where that directory cannot be
  written, into a temporary directory removed at exit.

The training run's metrics at the served epoch (its ``metrics.jsonl``), when the run directory
is still beside the checkpoint, go into the model's metadata.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain import __version__
from hvdtrain.config import TrainConfig
from hvdtrain.errors import CheckpointError, ConfigError, HvdtrainError, OutputError
from hvdtrain.inference.card import ModelCard, load_card
from hvdtrain.inference.exporting import export, sidecar_path, tokenizer_path
from hvdtrain.inference.inputs import Tokenize
from hvdtrain.serving.servable import Classifier, Parameter, TrainedInfo
from hvdtrain.types import TOKENS

# the export format a checkpoint of each framework is served from
EXPORT_FOR = {"torch": "onnx", "tensorflow": "keras"}
SUFFIX = {"onnx": ".onnx", "keras": ".keras"}
# modules each step needs: exporting a checkpoint, running an export
EXPORT_NEEDS = {"torch": ("torch", "onnx", "onnxscript"), "tensorflow": ("tensorflow", "keras")}
RUN_NEEDS = {"onnx": ("onnxruntime",), "keras": ("tensorflow", "keras"),
             "savedmodel": ("tensorflow",)}
# and for a fine-tuned language model, what tokenizes its text
TEXT_NEEDS = {"onnx": ("transformers",), "keras": ("keras_hub",),
              "savedmodel": ("tensorflow_text",)}
INSTALL_HINT = ("pip install 'hvdtrain[serve]' plus the model's runtime: onnxruntime for ONNX "
                "exports, tensorflow for Keras ones (torch, onnx and onnxscript to serve a "
                "torch checkpoint, which is exported first)")
EXPORT_HINT = ("give a file that hvdtrain export wrote (model.onnx, model.keras or a SavedModel "
               "directory) with its .json sidecar beside it, or the directory holding them")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Source:
    """What will be served, found and checked; nothing loaded yet."""

    card: ModelCard
    export_format: str
    model: Path | None  # the export; None: the checkpoint is exported by ``load``
    checkpoint: Path | None


def locate(checkpoint: str | None, model_dir: str | None) -> Source:
    if (checkpoint is None) == (model_dir is None):
        raise ConfigError("give one of --checkpoint and --model-dir",
                          hint="--checkpoint runs/exp1 (a run directory or a .ckpt file), or "
                          "--model-dir model.onnx (what hvdtrain export wrote)")
    if checkpoint is not None:
        card = load_card(checkpoint)
        fmt = EXPORT_FOR[card.framework]
        _require(EXPORT_NEEDS[card.framework] + RUN_NEEDS[fmt] + _text_needs(card, fmt),
                 f"serving a {card.framework} checkpoint")
        return Source(card, fmt, None, card.path)
    model, meta = find_export(str(model_dir))
    spec = read_sidecar(meta)
    fmt = str(spec["format"])
    if fmt not in RUN_NEEDS:
        raise ConfigError(f"{model}: a {fmt} export; hvdtrain serve runs torch models in ONNX "
                          "Runtime and Keras models in TensorFlow",
                          hint="export with --format onnx (torch) or --format keras / "
                          "savedmodel (tensorflow), or serve the checkpoint itself")
    card = card_from_sidecar(model, meta, spec)
    _require(RUN_NEEDS[fmt] + _text_needs(card, fmt), f"serving a {fmt} export")
    if card.kind == TOKENS and fmt == "onnx" and not tokenizer_path(model).is_dir():
        raise CheckpointError(f"--model-dir {model_dir}: no tokenizer "
                              f"{tokenizer_path(model).name}/ beside {model.name}",
                              hint="hvdtrain export --format onnx writes MODEL, MODEL.json and "
                              "MODEL.tokenizer/ for a language model; keep them together")
    if card.kind == TOKENS and fmt != "onnx" and card.config.text_pair_column:
        raise ConfigError(f"{model}: a {fmt} export of a sentence-pair model takes one text "
                          "only", hint="serve the checkpoint itself (--checkpoint)")
    trained = Path(str(spec["trained"].get("checkpoint", "")))
    return Source(card, fmt, model, trained if trained.is_file() else None)


def _text_needs(card: ModelCard, fmt: str) -> tuple[str, ...]:
    return TEXT_NEEDS[fmt] if card.kind == TOKENS else ()


def _require(modules: tuple[str, ...], what: str) -> None:
    missing = [m for m in dict.fromkeys(modules) if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"{what} needs {', '.join(missing)}, which "
                          f"{'is' if len(missing) == 1 else 'are'} not installed",
                          hint=INSTALL_HINT)


def find_export(given: str) -> tuple[Path, Path]:
    """(the export, its sidecar) for ``--model-dir``."""
    path = Path(given)
    if not path.exists():
        raise CheckpointError(f"--model-dir {given}: no such file or directory",
                              hint=EXPORT_HINT)
    if path.is_file() or (path / "saved_model.pb").is_file():
        meta = sidecar_path(path)
        if not meta.is_file():
            raise CheckpointError(f"--model-dir {given}: no sidecar {meta.name} beside it",
                                  hint="hvdtrain export writes MODEL and MODEL.json (the input "
                                  "spec, class names, standardisation); keep them together")
        return path, meta
    found = [(path / j.name[: -len(".json")], j) for j in sorted(path.glob("*.json"))
             if (path / j.name[: -len(".json")]).exists()]
    if len(found) == 1:
        return found[0]
    if found:
        raise CheckpointError(f"--model-dir {given}: holds {len(found)} exports ("
                              f"{', '.join(m.name for m, _ in found)})",
                              hint="give the one to serve: --model-dir DIR/NAME")
    models = sorted(p.name for p in path.iterdir() if p.suffix in (".onnx", ".keras", ".pt")
                    or (p / "saved_model.pb").is_file())
    if models:
        raise CheckpointError(f"--model-dir {given}: {', '.join(models)} without the .json "
                              "sidecar hvdtrain export writes beside it", hint=EXPORT_HINT)
    raise CheckpointError(f"--model-dir {given}: no hvdtrain export in this directory",
                          hint=EXPORT_HINT)


def read_sidecar(meta: Path) -> dict[str, Any]:
    try:
        spec = json.loads(meta.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"{meta}: cannot read ({exc.strerror or exc})") from None
    except ValueError:
        raise CheckpointError(f"{meta}: not valid JSON; not an hvdtrain export sidecar",
                              hint=EXPORT_HINT) from None
    needed = ("format", "framework", "input", "class_names", "trained")
    if not isinstance(spec, dict) or any(k not in spec for k in needed) \
            or not isinstance(spec["input"], dict) or not isinstance(spec["trained"], dict):
        raise CheckpointError(f"{meta}: not an hvdtrain export sidecar (it needs "
                              f"{', '.join(needed)})", hint=EXPORT_HINT)
    return spec


def card_from_sidecar(model: Path, meta: Path, spec: dict[str, Any]) -> ModelCard:
    """The model card an export carries in its sidecar (no checkpoint needed)."""
    trained, given = spec["trained"], spec["input"]
    known = {f.name for f in fields(TrainConfig)}
    values = {"framework": spec["framework"], "model": trained.get("model", "mlp"),
              "data": trained.get("data", "unknown"), "seed": trained.get("seed", 42),
              "val_fraction": trained.get("val_fraction", 0.2)}
    # a language model's columns and length (older sidecars: the input's max_length)
    values.update({k: trained[k] for k in ("text_column", "text_pair_column", "max_length")
                   if k in trained})
    if "max_length" not in values and given.get("max_length"):
        values["max_length"] = given["max_length"]
    standardisation = spec.get("standardisation") or {}
    try:
        config = TrainConfig(**{k: v for k, v in values.items() if k in known})
        names = tuple(str(n) for n in spec["class_names"])
        shape = given.get("image_shape")
        return ModelCard(
            model, str(spec["framework"]), config, int(trained.get("epoch", 0)),
            Path(str(config.data)).name, str(given.get("kind", "tabular")), len(names),
            # a keras-hub export takes raw strings: shape [None]
            0 if given.get("kind") == TOKENS and len(given["shape"]) == 1 else
            int(given["shape"][1]),
            tuple(int(d) for d in shape) if shape else None,
            _floats(standardisation.get("mean")), _floats(standardisation.get("std")), names)
    except (HvdtrainError, KeyError, IndexError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{meta}: not a usable hvdtrain export sidecar ({exc})",
                              hint=EXPORT_HINT) from None


def _floats(values: Any) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float32)


def default_name(card: ModelCard) -> str:
    """``mlp-breast-cancer``: the model and its training data, as a URL-safe name."""
    base = f"{card.config.model}-{Path(str(card.config.data)).stem}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-.") or "model"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: a model name is letters, digits, '.', '_' and '-', "
                          "starting with a letter or digit (it is part of every URL)")
    return name


def load(source: Source, workers: int) -> Classifier:
    """The export (made first from a checkpoint), loaded in its runtime."""
    card, fmt = source.card, source.export_format
    model = source.model if source.model is not None else exported(card, fmt)
    tokenize: Tokenize | None = None
    try:
        if fmt == "onnx":
            from hvdtrain.serving.runtimes import load_onnx

            run, runtime = load_onnx(model, workers)
            if card.kind == TOKENS:
                from hvdtrain.serving.runtimes import load_tokenizer

                tokenize = load_tokenizer(tokenizer_path(model), card.config.max_length)
        elif card.kind == TOKENS:  # a keras-hub model: its preprocessor is in the export
            from hvdtrain.serving.runtimes import load_keras_text, load_savedmodel_text

            loader = load_keras_text if fmt == "keras" else load_savedmodel_text
            run, runtime = loader(model, card.config.text_pair_column is not None, workers)
        elif fmt == "keras":
            from hvdtrain.serving.runtimes import load_keras

            run, runtime = load_keras(model, card.num_features, card.input_dtype, workers)
        else:
            from hvdtrain.serving.runtimes import load_savedmodel

            run, runtime = load_savedmodel(model, workers)
    except HvdtrainError:
        raise
    except Exception as exc:  # a damaged file: the runtime's own words, on one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{model}: cannot load the {fmt} export ({first})",
                              hint="export it again with hvdtrain export") from None
    served = source.checkpoint if source.model is None else model
    return Classifier(card, run, runtime,
                      TrainedInfo(str(served), fmt, training_metrics(source.checkpoint,
                                                                     card.epoch)),
                      tokenize=tokenize)


def exported(card: ModelCard, fmt: str) -> Path:
    """The checkpoint's export in the cache beside it (made now if missing)."""
    digest = hashlib.sha256(f"{fmt} {__version__}\n".encode())
    with card.path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    name = f"{card.path.stem}-{digest.hexdigest()[:12]}{SUFFIX[fmt]}"
    cache = card.path.parent / ".hvdtrain-serve"
    try:
        cache.mkdir(exist_ok=True)
        return _export_into(card, fmt, cache / name)
    except (OSError, OutputError):  # read-only beside the checkpoint: a temporary directory
        scratch = Path(tempfile.mkdtemp(prefix="hvdtrain-serve-"))
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        return _export_into(card, fmt, scratch / name)


def _export_into(card: ModelCard, fmt: str, target: Path) -> Path:
    if target.exists() and sidecar_path(target).is_file():
        return target
    if not os.access(target.parent, os.W_OK):
        raise OutputError(f"{target.parent}: not writable")
    export(str(card.path), fmt, target)
    return target


def training_metrics(checkpoint: Path | None, epoch: int) -> dict[str, Parameter]:
    """The run's recorded metrics at ``epoch`` (``metrics.jsonl`` in the run directory of
    ``checkpoints/``), or nothing when that directory is not there."""
    if checkpoint is None or checkpoint.parent.name != "checkpoints":
        return {}
    try:
        lines = (checkpoint.parent.parent / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("epoch") == epoch:
            return {k: v for k, v in record.items() if k in (
                "train_loss", "train_accuracy", "val_loss", "val_accuracy")
                and isinstance(v, (int, float))}
    return {}
