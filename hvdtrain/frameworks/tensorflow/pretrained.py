"""KerasHub text classifiers (``keras-hub:DIR``) behind the same seam as the built-ins.

A preset directory written by ``save_to_preset`` (a downloaded KerasHub/Kaggle preset, or a
model the user saved) loads with ``keras_hub.models.TextClassifier.from_preset`` with offline
mode forced (``hvdtrain.pretrained.OFFLINE_ENV``) and ``KERAS_BACKEND=tensorflow``; its own
preprocessor (``TextClassifierPreprocessor.from_preset``, the preset's tokenizer) tokenizes the
text, so training sees the token ids the model will see in service. The classification head is
sized from the data's labels: a saved ``task.json`` head of that size is kept with its weights,
any other is made fresh (``num_classes`` given to ``from_preset``).

Text crosses the adapter seam as in the torch adapter (``frameworks.torch.pretrained``): one
int32 array per batch shaped (rows, 3, length), token ids, padding mask and segment ids.
``PackedTextClassifier`` (a ``keras.Model``) trims each batch to its longest row, feeds the
backbone the inputs it takes (``token_ids``, ``padding_mask``, ``segment_ids``) and, for two
classes, returns one logit ``l1 - l0``: the adapter's binary loss on it equals cross-entropy
over the task's two logits, and the task keeps two outputs on export. ``--precision bf16`` is
the ``mixed_bfloat16`` policy (float32 variables); the logits are float32 whatever the policy.
Importing this module imports neither TensorFlow nor KerasHub.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.errors import ConfigError
from hvdtrain.pretrained import OFFLINE_ENV, ModelSize, parse_pretrained

IDS, MASK, TYPES = 0, 1, 2  # rows of a packed batch
INPUTS = ("token_ids", "padding_mask", "segment_ids")  # the backbone inputs, in that order
ENCODE_ROWS = 4096  # texts tokenized per call: memory stays bounded for a large file


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def keras_hub() -> Any:
    """``keras_hub``, imported offline on the TensorFlow backend."""
    os.environ.update(OFFLINE_ENV)
    os.environ["KERAS_BACKEND"] = "tensorflow"  # this adapter's backend, whatever else is set
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    if keras.config.backend() != "tensorflow":
        raise ConfigError(f"--model keras-hub: needs Keras on the TensorFlow backend; Keras was "
                          f"already loaded with {keras.config.backend()}",
                          hint="unset KERAS_BACKEND (or set it to tensorflow)")
    import keras_hub as hub

    return hub


def model_directory(name: str) -> Path:
    model = parse_pretrained(name)
    if model is None:
        raise ConfigError(f"--model {name} is not a pretrained model")
    return model.directory()


def _cannot_load(name: str, directory: Path, what: str, exc: BaseException) -> ConfigError:
    return ConfigError(f"--model {name}: cannot load {what} from {directory} "
                       f"({_first_line(exc)})",
                       hint="it must be a KerasHub preset with a text classifier (BERT, "
                       "RoBERTa, DeBERTa, ...) written by save_to_preset")


def _max_positions(directory: Path) -> int | None:
    try:
        config = json.loads((directory / "config.json").read_text())
        value = config.get("config", {}).get("max_sequence_length")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) else None


@functools.lru_cache(maxsize=4)
def load_preprocessor(directory: Path, max_length: int) -> Any:
    """The preset's own ``TextClassifierPreprocessor``, truncating to ``max_length`` tokens."""
    most = _max_positions(directory)
    if most is not None and max_length > most:
        raise ConfigError(f"--max-length {max_length}: the model at {directory} takes at most "
                          f"{most} tokens", hint=f"use --max-length {most} or less")
    hub = keras_hub()
    try:
        return hub.models.TextClassifierPreprocessor.from_preset(str(directory),
                                                                 sequence_length=max_length)
    except Exception as exc:  # keras_hub raises many kinds for a bad directory
        raise _cannot_load(f"keras-hub:{directory}", directory, "its preprocessor",
                           exc) from None


def encode(preprocessor: Any, texts: Sequence[str], pairs: Sequence[str] | None) -> np.ndarray:
    """Token ids, padding mask and segment ids of every text (a pair's segments packed as the
    preprocessor packs them), as one int32 array shaped (rows, 3, length): truncated to the
    preprocessor's sequence length, then cut to the longest row."""
    import tensorflow as tf

    parts = []
    for start in range(0, len(texts), ENCODE_ROWS):
        chunk = tf.constant(list(texts[start:start + ENCODE_ROWS]), dtype=tf.string)
        segments: Any = chunk if pairs is None else (
            chunk, tf.constant(list(pairs[start:start + ENCODE_ROWS]), dtype=tf.string))
        out = preprocessor(x=segments)  # a positional tuple would be read as (x, y)
        ids = np.asarray(out["token_ids"])
        rows = [ids, np.asarray(out["padding_mask"]),
                np.asarray(out["segment_ids"]) if "segment_ids" in out else np.zeros_like(ids)]
        parts.append(np.stack(rows, axis=1).astype(np.int32))
    if not parts:
        return np.zeros((0, 3, 1), dtype=np.int32)
    packed = np.concatenate(parts)
    longest = max(int(packed[:, MASK].sum(1).max()), 1)
    return np.ascontiguousarray(packed[:, :, :longest])


def encode_texts(name: str, texts: Sequence[str], pairs: Sequence[str] | None,
                 max_length: int) -> np.ndarray:
    """``encode`` with the preprocessor of the preset ``name`` (``keras-hub:PATH``)."""
    directory = model_directory(name)
    preprocessor = load_preprocessor(directory, max_length)
    try:
        return encode(preprocessor, texts, pairs)
    except Exception as exc:  # e.g. a preprocessor that takes no sentence pairs
        what = "sentence pairs" if pairs is not None else "text"
        raise ConfigError(f"--model {name}: its preprocessor cannot tokenize this {what} "
                          f"({_first_line(exc)})") from None


def _saved_classes(hub: Any, directory: Path) -> int | None:
    """The size of the preset's saved classifier head (``task.json``), or None."""
    path = directory / "task.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
        from keras_hub.src.utils.preset_utils import check_config_class

        if not issubclass(check_config_class(config), hub.models.TextClassifier):
            return None
        return int(config["config"]["num_classes"])
    except Exception:  # an unreadable task.json: make a fresh head
        return None


def _classifier_class() -> Any:
    import keras
    import tensorflow as tf

    class PackedTextClassifier(keras.Model):
        """A KerasHub text classifier taking packed batches (see the module docstring)."""

        def __init__(self, task: Any, num_outputs: int, **kwargs: Any) -> None:
            super().__init__(name="hvdtrain_text_classifier", **kwargs)
            self.task = task
            self.num_outputs = num_outputs
            taken = task.backbone.input
            self.feeds = tuple(n for n in INPUTS if isinstance(taken, dict) and n in taken)
            self.built = True  # every variable exists: the task is built

        def call(self, packed: Any, training: bool = False) -> Any:
            packed = tf.cast(packed, tf.int32)
            longest = tf.maximum(tf.reduce_max(tf.reduce_sum(packed[:, MASK], 1)), 1)
            packed = packed[:, :, :longest]  # dynamic padding: the batch's longest row
            rows = {"token_ids": packed[:, IDS], "padding_mask": packed[:, MASK],
                    "segment_ids": packed[:, TYPES]}
            logits = tf.cast(self.task({n: rows[n] for n in self.feeds}, training=training),
                             tf.float32)
            if self.num_outputs == 1:  # two classes: one logit, the log-odds of class 1
                return logits[:, 1:2] - logits[:, 0:1]
            return logits

    return PackedTextClassifier


def load_task(name: str, num_classes: int, dtype: str = "float32") -> Any:
    """The preset's ``TextClassifier`` (no preprocessor, logits out) with a head for
    ``num_classes`` (two for a binary task), under the Keras dtype policy ``dtype``;
    ``hvdtrain_head_kept`` says whether the saved head was kept."""
    hub = keras_hub()
    directory = model_directory(name)
    outputs = max(num_classes, 2)
    kept = _saved_classes(hub, directory) == outputs
    options: dict[str, Any] = {"preprocessor": None, "activation": None}
    if not kept:
        options["num_classes"] = outputs  # a fresh head (keras_hub: task weights not loaded)
    if dtype != "float32":  # else the preset's own (float32 weights load as float32)
        options["dtype"] = dtype
    try:
        task = hub.models.TextClassifier.from_preset(str(directory), **options)
    except Exception as exc:  # keras_hub raises many kinds for a bad directory
        raise _cannot_load(name, directory, "a text classifier", exc) from None
    task.hvdtrain_head_kept = kept
    return task


def build(name: str, num_classes: int, label_names: Sequence[str] | None,
          dtype: str = "float32") -> Any:
    """The preset ``name`` (``keras-hub:PATH``) as a ``keras.Model`` taking packed batches,
    with a head for ``num_classes``, under the Keras dtype policy ``dtype``
    (``offline.POLICIES``)."""
    task = load_task(name, num_classes, dtype)
    model = _classifier_class()(task, 1 if num_classes == 2 else num_classes)
    model.label_names = list(label_names) if label_names else [str(i) for i in
                                                                range(num_classes)]
    return model


def _count(variables: Sequence[Any]) -> int:
    return sum(int(np.prod(v.shape)) for v in variables)


def freeze(model: Any, embeddings: bool, layers: int) -> int:
    """Stop training the embeddings (every backbone layer named ``*embedding*``, their
    normalisation included) and/or the first ``layers`` transformer blocks; returns how many
    parameters were frozen. ``ConfigError`` when the model has fewer blocks."""
    backbone = model.task.backbone
    frozen = 0
    if embeddings:
        for layer in backbone.layers:
            if "embedding" in layer.name and layer.trainable:
                frozen += _count(layer.trainable_weights)
                layer.trainable = False
    if layers:
        blocks = getattr(backbone, "transformer_layers", None) or [
            layer for layer in backbone.layers if layer.name.startswith("transformer_layer")]
        if layers > len(blocks):
            raise ConfigError(f"--freeze-layers {layers}: the model has {len(blocks)} blocks")
        for block in blocks[:layers]:
            frozen += _count(block.trainable_weights)
            block.trainable = False
    return frozen


def describe(model: Any) -> ModelSize:
    backbone = model.task.backbone
    weights = [v for v in model.weights if "float" in str(v.dtype)]  # not seed states
    return ModelSize(_count(weights), _count(model.trainable_weights),
                     int(getattr(backbone, "hidden_dim", 0) or 0),
                     int(getattr(backbone, "num_layers", 0) or 0))


def serving_task(model: Any, name: str, max_length: int) -> Any:
    """A copy of the fine-tuned task that takes raw strings: the preset's preprocessor
    (truncating to ``max_length``) attached, and a softmax over its logits (binary: ``[1 - p,
    p]`` with p the sigmoid of ``l1 - l0``, as ``predict`` computes). KerasHub classes only,
    so ``keras.saving.load_model`` restores it without hvdtrain."""
    task = model.task
    copy = type(task).from_config({**task.get_config(), "activation": "softmax",
                                   "preprocessor": None})
    copy.set_weights(task.get_weights())
    copy.preprocessor = load_preprocessor(model_directory(name), max_length)
    return copy
