"""Hugging Face ``transformers`` sequence classifiers behind the same seam as the built-ins.

A pretrained model and its tokenizer load from a local ``save_pretrained`` directory with
offline mode forced (``hvdtrain.pretrained.OFFLINE_ENV``); the classification head is sized from
the data's labels (a head of another size is re-initialised, and said so once). We use
``transformers`` rather than code of our own because it is what users' checkpoints are written
with: its ``from_pretrained``/``save_pretrained`` are the file format, and its tokenizers are
the ones the model was trained with.

Text crosses the adapter seam as one int32 array per batch, shaped (rows, 3, length): token
ids, attention mask and token types, so the loop, sharding and checkpoints stay unchanged.
``SequenceClassifier`` trims each batch to its longest row (dynamic padding) before the model
sees it, and for two classes returns one logit, ``l1 - l0``: the adapter's binary loss on it
equals cross-entropy over the model's two logits, and the model keeps two labels on export.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.errors import ConfigError
from hvdtrain.pretrained import OFFLINE_ENV, ModelSize, parse_pretrained

IDS, MASK, TYPES = 0, 1, 2  # rows of a packed batch


def _offline() -> None:
    os.environ.update(OFFLINE_ENV)
    logging.getLogger("transformers").setLevel(logging.ERROR)  # its load reports are ours


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def model_directory(name: str) -> Path:
    model = parse_pretrained(name)
    if model is None:
        raise ConfigError(f"--model {name} is not a pretrained model")
    return model.directory()


@functools.lru_cache(maxsize=4)
def load_tokenizer(directory: Path) -> Any:
    """The tokenizer saved in ``directory``, read from disk once per process (a predict
    tokenizes batch after batch, and building the model asks it too)."""
    _offline()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # transformers raises many kinds for a bad directory
        raise ConfigError(f"{directory}: cannot load its tokenizer ({_first_line(exc)})",
                          hint="save the tokenizer beside the model: "
                          "tokenizer.save_pretrained(DIR)") from None


def encode(tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None,
           max_length: int) -> np.ndarray:
    """Token ids, attention mask and token types of every text, as one int32 array shaped
    (rows, 3, length): truncated to ``max_length``, padded to the longest row."""
    if tokenizer.pad_token is None:  # GPT-style tokenizers have none: pad with end-of-text
        tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(list(texts), list(pairs) if pairs is not None else None,
                        truncation=True, max_length=max_length, padding="longest",
                        return_tensors="np")
    ids = encoded["input_ids"]
    types = encoded.get("token_type_ids")
    packed = np.stack([ids, encoded["attention_mask"],
                       types if types is not None else np.zeros_like(ids)], axis=1)
    return packed.astype(np.int32)


def encode_texts(name: str, texts: Sequence[str], pairs: Sequence[str] | None,
                 max_length: int) -> np.ndarray:
    """``encode`` with the tokenizer saved beside the model ``name`` (``hf:PATH``)."""
    return encode(load_tokenizer(model_directory(name)), texts, pairs, max_length)


def _torch_module() -> Any:
    import torch

    class SequenceClassifier(torch.nn.Module):
        """A transformers classifier taking packed batches (see the module docstring)."""

        def __init__(self, model: Any, num_outputs: int, uses_token_types: bool) -> None:
            super().__init__()
            self.model = model
            self.num_outputs = num_outputs
            self.uses_token_types = uses_token_types
            self.trim = True  # off for export: a traced graph has no data-dependent shapes

        def forward(self, packed: Any) -> Any:
            packed = packed.long()
            length = max(int(packed[:, MASK].sum(1).max()), 1) if self.trim else None
            inputs = {"input_ids": packed[:, IDS, :length],
                      "attention_mask": packed[:, MASK, :length]}
            if self.uses_token_types:
                inputs["token_type_ids"] = packed[:, TYPES, :length]
            logits = self.model(**inputs).logits
            if self.num_outputs == 1:  # two classes: one logit, the log-odds of class 1
                return logits[:, 1:2] - logits[:, 0:1]
            return logits

    return SequenceClassifier


def build(name: str, num_classes: int, label_names: Sequence[str] | None) -> Any:
    """The pretrained model ``name`` (``hf:PATH``) with a head for ``num_classes``."""
    _offline()
    from transformers import AutoModelForSequenceClassification

    directory = model_directory(name)
    labels = list(label_names) if label_names else [str(i) for i in range(num_classes)]
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(directory), local_files_only=True, num_labels=max(num_classes, 2),
            id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
            ignore_mismatched_sizes=True)
    except Exception as exc:
        raise ConfigError(f"--model {name}: cannot load it from {directory} "
                          f"({_first_line(exc)})",
                          hint="it must be a transformers model with a sequence-classification "
                          "head class (AutoModelForSequenceClassification)") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = model.config.eos_token_id
    uses_types = "token_type_ids" in getattr(load_tokenizer(directory), "model_input_names", ())
    return _torch_module()(model, 1 if num_classes == 2 else num_classes, uses_types)


def freeze(classifier: Any, embeddings: bool, layers: int) -> int:
    """Stop training the embeddings and/or the first ``layers`` blocks; returns how many
    parameters were frozen. ``ConfigError`` when the model has fewer blocks."""
    base = classifier.model.base_model
    frozen = 0
    if embeddings:
        for module_name in ("embeddings", "wte", "wpe", "embed_tokens"):
            module = getattr(base, module_name, None)
            if module is not None:
                for parameter in module.parameters():
                    parameter.requires_grad_(False)
                    frozen += parameter.numel()
    if layers:
        blocks = _blocks(base)
        if blocks is None or layers > len(blocks):
            have = "no block list it knows" if blocks is None else f"{len(blocks)} blocks"
            raise ConfigError(f"--freeze-layers {layers}: the model has {have}")
        for block in list(blocks)[:layers]:
            for parameter in block.parameters():
                parameter.requires_grad_(False)
                frozen += parameter.numel()
    return frozen


def _blocks(base: Any) -> Any:
    for path in ("encoder.layer", "h", "layers", "transformer.layer", "layer"):
        node = base
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if node is not None and hasattr(node, "__len__"):
            return node
    return None


def export_pretrained(classifier: Any, name: str, out: Path) -> None:
    """A ``save_pretrained`` directory: model, tokenizer and label names, loadable with
    ``from_pretrained`` by a Python that has never heard of hvdtrain."""
    classifier.model.save_pretrained(str(out))
    load_tokenizer(model_directory(name)).save_pretrained(str(out))


def describe(classifier: Any) -> ModelSize:
    config = classifier.model.config
    parameters = list(classifier.parameters())
    return ModelSize(sum(p.numel() for p in parameters),
                     sum(p.numel() for p in parameters if p.requires_grad),
                     int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0)),
                     int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 0)))
