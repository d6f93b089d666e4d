"""A pretrained language model's training data: labelled text, tokenized by the model's own
tokenizer.

The file is read by ``hvdtrain.data.text`` (the same reader evaluate, predict and serving use),
split into training and validation rows exactly as every other data set is (``sharding``: the
same on every rank), and tokenized by the framework that loads the model (``encode_texts`` of
its ``hvdtrain.pretrained`` kind), so training sees the token ids the model will see in
service. The result is an ordinary ``Dataset`` of kind ``tokens`` whose rows are packed token
arrays, with the label names beside it.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.config import TrainConfig
from hvdtrain.data.text import label_ids, label_names, read_labelled_text
from hvdtrain.errors import ConfigError, DataError
from hvdtrain.pretrained import parse_pretrained
from hvdtrain.training.sharding import split_and_standardise
from hvdtrain.types import TOKENS, Collectives, Dataset


def encoder_for(model_name: str) -> Any:
    """The ``encode_texts`` of the framework that loads ``model_name``."""
    model = parse_pretrained(model_name)
    if model is None:
        raise ConfigError(f"--model {model_name} is not a pretrained model (hf:DIR or "
                          "keras-hub:DIR)")
    module, _, attr = model.kind.encoder.partition(":")
    return getattr(importlib.import_module(module), attr)


def check_text_data(config: TrainConfig) -> tuple[str, ...]:
    """The launcher's check of a pretrained model's data: readable, the named columns, at
    least two classes. Returns the label names."""
    path = Path(config.data)
    if not path.is_file():
        raise DataError(f"{path}: no such data file",
                        hint="a pretrained model trains on a .jsonl, .csv or .tsv file of "
                        "labelled text")
    rows = read_labelled_text(path, config.text_column, config.label_column,
                              config.text_pair_column)
    assert rows.labels is not None
    return label_names(rows.labels, str(path))


def load_text_dataset(config: TrainConfig, comm: Collectives | None = None) -> Dataset:
    """The tokenized set. With ``comm``, each rank tokenizes only every size-th row and the
    ranks exchange their parts (one allgather), so tokenizing a large file takes 1/size of
    the time; every rank ends with the same arrays."""
    path = Path(config.data)
    rows = read_labelled_text(path, config.text_column, config.label_column,
                              config.text_pair_column)
    assert rows.labels is not None
    names = label_names(rows.labels, str(path))
    y = np.array(label_ids(rows.labels, rows.where, names), dtype=np.int64)
    encode = encoder_for(config.model)
    if comm is None or comm.size == 1:
        x = encode(config.model, rows.texts, rows.pairs, config.max_length)
    else:
        mine = slice(comm.rank, None, comm.size)
        part = encode(config.model, rows.texts[mine], rows.pairs[mine] if rows.pairs else None,
                      config.max_length)
        x = interleave(comm.allgather_object(part), len(rows.texts))
    data = split_and_standardise(path.name, "text", x, y, config.seed, config.val_fraction)
    return replace(data, kind=TOKENS, num_classes=len(names), label_names=names)


def interleave(parts: list[np.ndarray], n: int) -> np.ndarray:
    """Rows ``rank, rank + size, ...`` of each rank's part back in file order, padded to the
    longest part's length (padding is masked out)."""
    length = max(part.shape[2] for part in parts)
    x = np.zeros((n, 3, length), dtype=np.int32)
    for rank, part in enumerate(parts):
        x[rank::len(parts), :, :part.shape[2]] = part
    return x
