"""TensorFlow exports: a SavedModel directory (endpoint ``serve``) and a Keras 3 ``.keras``
file of the checkpoint's model with its probability head (``inference.probabilities_model``:
standard layers only, so both load without hvdtrain). Each is loaded back here and must
reproduce the model's probabilities to 1e-5. Importing this module does not import TF.

A fine-tuned ``keras-hub:`` model is exported with its preprocessor inside, so both take raw
strings: the ``.keras`` file is the KerasHub task itself (``pretrained.serving_task``: the
preset's tokenizer truncating to ``--max-length``, a softmax over the logits; KerasHub classes
only), used as ``keras.saving.load_model(PATH).predict(texts)``; the SavedModel's ``serve``
takes a string tensor (its tokenizer ops are TensorFlow Text's: ``import tensorflow_text``
before loading it). Both are checked against the checkpoint's model on the probe texts
tokenized as training tokenized them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.config import TrainConfig
from hvdtrain.errors import ConfigError
from hvdtrain.frameworks.tensorflow.inference import load_model, probabilities_model
from hvdtrain.types import TOKENS, Dataset

TOLERANCE = 1e-5


def _probe(data: Dataset, rows: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    if data.kind == "text":
        return rng.integers(0, 257, size=(rows, data.num_features)).astype(np.int64)
    return rng.standard_normal((rows, data.num_features)).astype(np.float32)


def _model(config: TrainConfig, data: Dataset, checkpoint: Path) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return probabilities_model(load_model(config, data, checkpoint), data)


def _compare(what: str, got: Any, expected: np.ndarray) -> str:
    got = np.asarray(got)
    worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else np.inf
    if not worst <= TOLERANCE:
        raise ConfigError(f"the {what} export does not reproduce the model: largest "
                          f"difference {worst:g}")
    return f"loaded back: {len(expected)} probe rows agree (largest difference {worst:.1e})"


PROBE_WORDS = ["the", "a", "good", "bad", "movie", "film", "probe", "text", "was", "very", "not"]


def probe_texts(rows: int = 16) -> list[str]:
    """Texts of several lengths (some words any vocabulary has, some it may not)."""
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(PROBE_WORDS, size=int(n))) for n in rng.integers(1, 24, rows)]


def _text_model(config: TrainConfig, data: Dataset, checkpoint: Path
                ) -> tuple[Any, list[str], np.ndarray]:
    """(the task taking raw strings, probe texts, the checkpoint's probabilities for them)."""
    from hvdtrain.frameworks.tensorflow.inference import probability_layers
    from hvdtrain.frameworks.tensorflow.pretrained import encode_texts, serving_task

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    model = load_model(config, data, checkpoint)
    texts = probe_texts()
    out = model(encode_texts(config.model, texts, None, config.max_length), training=False)
    for layer in probability_layers(data.num_classes == 2):
        out = layer(out)
    return serving_task(model, config.model, config.max_length), texts, np.asarray(out)


def _text_info(config: TrainConfig, fmt: str, load: str, check: str) -> dict[str, Any]:
    return {"load": load, "input_name": "text", "output_name": "probabilities", "check": check,
            "input": {"dtype": "string", "shape": [None], "preprocessor": "included",
                      "text_encoding": f"raw text: the {fmt} export includes the model's "
                      f"KerasHub preprocessor (its tokenizer, truncating to "
                      f"{config.max_length} tokens)"}}


def export_savedmodel(config: TrainConfig, data: Dataset, checkpoint: Path,
                      output: Path) -> dict[str, Any]:
    import tensorflow as tf

    if data.kind == TOKENS:
        return _savedmodel_of_text(config, data, checkpoint, output)
    model = _model(config, data, checkpoint)
    probe = _probe(data)
    model.export(str(output), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(output))  # kept: its variables die with it
    served = loaded.serve(tf.constant(probe))
    return {"load": "tf.saved_model.load(PATH).serve(x)", "input_name": "x",
            "output_name": "probabilities",
            "check": _compare("SavedModel", served, np.asarray(model(probe)))}


def _savedmodel_of_text(config: TrainConfig, data: Dataset, checkpoint: Path,
                        output: Path) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    task, texts, expected = _text_model(config, data, checkpoint)
    archive = keras.export.ExportArchive()
    archive.track(task)
    archive.add_endpoint(
        "serve", lambda text: task(task.preprocessor(x=text), training=False),
        input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    archive.write_out(str(output), verbose=False)
    loaded = tf.saved_model.load(str(output))  # kept: its variables die with it
    served = loaded.serve(tf.constant(texts))
    return _text_info(config, "SavedModel", "import tensorflow_text (its tokenizer ops); "
                      "model = tf.saved_model.load(PATH); model.serve(tf.constant(texts))",
                      _compare("SavedModel", served, expected))


def _keras_of_text(config: TrainConfig, data: Dataset, checkpoint: Path,
                   output: Path) -> dict[str, Any]:
    import keras

    task, texts, expected = _text_model(config, data, checkpoint)
    task.compiled = False  # no training configuration in an inference export
    task.save(str(output))
    loaded = keras.saving.load_model(str(output))
    return _text_info(config, "Keras", "keras.saving.load_model(PATH).predict(texts) (KerasHub "
                      "installed)", _compare("Keras", loaded.predict(texts, verbose=0),
                                             expected))


def export_keras(config: TrainConfig, data: Dataset, checkpoint: Path,
                 output: Path) -> dict[str, Any]:
    import keras

    if data.kind == TOKENS:
        return _keras_of_text(config, data, checkpoint, output)
    model = _model(config, data, checkpoint)
    probe = _probe(data)
    model.save(str(output))
    loaded = keras.saving.load_model(str(output))
    return {"load": "keras.saving.load_model(PATH)(x)", "input_name": "x",
            "output_name": "probabilities",
            "check": _compare("Keras", loaded(probe), np.asarray(model(probe)))}
