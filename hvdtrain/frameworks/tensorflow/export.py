"""TensorFlow exports: a SavedModel directory (endpoint ``serve``) and a Keras 3 ``.keras``
file of the checkpoint's model with its probability head (``inference.probabilities_model``:
standard layers only, so both load without hvdtrain). Each is loaded back here and must
reproduce the model's probabilities to 1e-5. Importing this module does not import TF.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.errors import ConfigError
from hvdtrain.frameworks.tensorflow.inference import load_model, probabilities_model
from hvdtrain.types import Dataset, TrainConfig

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


def export_savedmodel(config: TrainConfig, data: Dataset, checkpoint: Path,
                      output: Path) -> dict[str, Any]:
    import tensorflow as tf

    model = _model(config, data, checkpoint)
    probe = _probe(data)
    model.export(str(output), format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(str(output))  # kept: its variables die with it
    served = loaded.serve(tf.constant(probe))
    return {"load": "tf.saved_model.load(PATH).serve(x)", "input_name": "x",
            "output_name": "probabilities",
            "check": _compare("SavedModel", served, np.asarray(model(probe)))}


def export_keras(config: TrainConfig, data: Dataset, checkpoint: Path,
                 output: Path) -> dict[str, Any]:
    import keras

    model = _model(config, data, checkpoint)
    probe = _probe(data)
    model.save(str(output))
    loaded = keras.saving.load_model(str(output))
    return {"load": "keras.saving.load_model(PATH)(x)", "input_name": "x",
            "output_name": "probabilities",
            "check": _compare("Keras", loaded(probe), np.asarray(model(probe)))}
