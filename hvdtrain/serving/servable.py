"""The seam between the server and a model: a ``Servable`` turns one request's tensors into rows
for its runtime, runs a batch of rows, and turns a request's share of the output back into
tensors; it also says what it takes and gives (``TensorSpec``) and what it is (parameters).

The server knows nothing else about models: the protocol checks names, datatypes and shapes
against the specs, the batcher concatenates what ``prepare`` returns and splits what ``run``
returns by rows, and ``finish`` works on one request's rows. A text model (a BYTES input,
tokenized in ``prepare``) is one more ``Servable``, not a change to the server.

``Classifier`` serves the models ``hvdtrain train`` builds. Its preparation is ``predict``'s
own (``inference.inputs.prepare_rows``: the same checks, the same standardisation in float32
with the checkpoint's statistics, the same byte tokens for text; a request of finite features
is standardised by the same float32 expression on the whole array at once), so a row sent
here meets the model exactly as the same row read by ``hvdtrain predict`` does; the predicted
class is the column of the largest probability, and its label the class name training
recorded.

A fine-tuned language model (kind ``tokens``) takes raw UTF-8 text (``text``, and
``text_pair`` for a sentence-pair model): ``prepare`` only decodes it (rows of (text, pair)
strings), so the batcher coalesces strings, and ``run`` tokenizes the whole batch at once with
the trained tokenizer, padded to its longest row (the attention mask hides the padding), before
ONNX Runtime runs it. A keras-hub export takes the strings itself (its preprocessor is in it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hvdtrain.errors import DataError
from hvdtrain.inference.card import ModelCard
from hvdtrain.inference.inputs import Row, Tokenize, prepare_rows
from hvdtrain.types import TOKENS

Parameter = str | int | float | bool


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # the protocol's: FP32, INT64, BYTES
    shape: tuple[int, ...]  # -1: any size; the first dimension is the batch

    def as_v2(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Servable(Protocol):
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    version: str
    runtime: str  # what runs it, in words (metadata and the start-up line)

    def parameters(self) -> dict[str, Parameter]:
        """What the model is and how it was trained, for the model's metadata."""
        ...

    def prepare(self, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        """One request's checked tensors (by input name) → its rows for ``run``; a problem
        with the values is a ``DataError`` naming the row."""
        ...

    def run(self, rows: np.ndarray) -> np.ndarray:
        """The runtime on a batch of rows (several requests' rows together); called off the
        event loop, from several threads at once when ``--workers`` > 1."""
        ...

    def finish(self, out: np.ndarray) -> dict[str, np.ndarray]:
        """One request's rows of ``run``'s output → its output tensors (by output name)."""
        ...

    def probe(self) -> dict[str, np.ndarray]:
        """A valid request (one row) for the warm-up."""
        ...


@dataclass(frozen=True)
class TrainedInfo:
    """Where a served model came from: the export's format, and what the run recorded."""

    source: str  # the checkpoint or export served
    export_format: str
    metrics: Mapping[str, Parameter]  # the training run's, at the served epoch, when found


class Classifier:
    """A model ``hvdtrain train`` built: features (or text) in, class probabilities out."""

    def __init__(self, card: ModelCard, runtime: Callable[[np.ndarray], np.ndarray],
                 runtime_name: str, trained: TrainedInfo, tokenize: Tokenize | None = None
                 ) -> None:
        self.card, self._runtime, self.runtime, self.trained = card, runtime, runtime_name, trained
        self._tokenize = tokenize  # a language model run by ONNX Runtime: its tokenizer
        self._pairs = card.kind == TOKENS and card.config.text_pair_column is not None
        self.version = str(card.epoch)
        if card.kind in ("text", TOKENS):
            self.inputs: tuple[TensorSpec, ...] = (TensorSpec("text", "BYTES", (-1,)),) + (
                (TensorSpec("text_pair", "BYTES", (-1,)),) if self._pairs else ())
        else:
            self.inputs = (TensorSpec("x", "FP32", (-1, card.num_features)),)
        self.outputs: tuple[TensorSpec, ...] = (
            TensorSpec("class", "INT64", (-1,)), TensorSpec("label", "BYTES", (-1,)),
            TensorSpec("probabilities", "FP32", (-1, card.num_classes)))
        self._labels = np.array([n.encode() for n in card.class_names], dtype=object)

    def parameters(self) -> dict[str, Parameter]:
        card, config = self.card, self.card.config
        found: dict[str, Parameter] = {
            "framework": card.framework, "model": config.model, "data": config.data,
            "data_kind": card.kind, "epoch": card.epoch, "classes": card.num_classes,
            "class_names": json.dumps(list(card.class_names)),
            "features": card.num_features, "seed": config.seed,
            "val_fraction": config.val_fraction,
            "preprocessing": _preprocessing(card, tokenized=self._tokenize is not None),
            "source": self.trained.source, "format": self.trained.export_format,
            "runtime": self.runtime}
        if card.kind == TOKENS:
            found.update({"max_length": config.max_length, "text_pair": self._pairs})
        found.update({f"trained_{k}": v for k, v in self.trained.metrics.items()})
        return found

    def prepare(self, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        name = self.inputs[0].name
        values = tensors[name]
        if self.card.kind == TOKENS:  # checked text now; tokenized by batch, in ``run``
            texts = np.empty((len(values), 2), dtype=object)
            for spec in self.inputs:
                column = 0 if spec.name == name else 1
                for i, v in enumerate(tensors[spec.name]):
                    texts[i, column] = _utf8(v, spec.name, i)
            return texts
        if self.card.kind == "text":
            rows: list[Row] = [(_utf8(v, name, i), None, f"input {name!r} row {i}")
                               for i, v in enumerate(values)]
            return prepare_rows(self.card, rows)
        x = np.asarray(values, dtype=np.float32)
        if x.ndim == 2 and x.shape[1] == self.card.num_features and np.isfinite(x).all():
            # predict's arithmetic on the whole request at once (float32, the same
            # statistics; bit for bit, tested): prepare_rows row by row costs twice this,
            # about what the MLP's runtime call costs
            mean, std = self.card.mean, self.card.std
            return x if mean is None or std is None else ((x - mean) / std).astype(np.float32)
        rows = [(v, None, f"input {name!r} row {i}") for i, v in enumerate(values)]
        return prepare_rows(self.card, rows)  # its checks name the row at fault

    def run(self, rows: np.ndarray) -> np.ndarray:
        if self._tokenize is not None:  # the batch's texts tokenized together, as predict's
            rows = prepare_rows(self.card, [((text, pair), None, f"row {i}")
                                            for i, (text, pair) in enumerate(rows)],
                                tokenize=self._tokenize)
        return self._runtime(rows)

    def finish(self, out: np.ndarray) -> dict[str, np.ndarray]:
        probabilities = np.asarray(out, dtype=np.float32)
        classes = probabilities.argmax(axis=1).astype(np.int64)
        return {"class": classes, "label": self._labels[classes],
                "probabilities": probabilities}

    def probe(self) -> dict[str, np.ndarray]:
        if self.card.kind in ("text", TOKENS):
            return {s.name: np.array([b"warm-up"], dtype=object) for s in self.inputs}
        mean = self.card.mean if self.card.mean is not None else 0.0
        return {"x": np.zeros((1, self.card.num_features), np.float32) + mean}


def _preprocessing(card: ModelCard, tokenized: bool) -> str:
    if card.kind == "text":
        return "UTF-8 bytes to byte tokens, as training"
    if card.kind == TOKENS:
        where = "by the server" if tokenized else "by the model's own preprocessor"
        return (f"the fine-tuned model's tokenizer, truncating to {card.config.max_length} "
                f"tokens, each batch padded to its longest row, applied {where}")
    return ("x = (raw - mean) / std in float32, with the training split's statistics, "
            "applied by the server")


def _utf8(value: Any, name: str, row: int) -> str:
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"input {name!r} row {row}: not UTF-8 text ({exc.reason} at byte "
                        f"{exc.start})") from None
