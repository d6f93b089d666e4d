"""TensorFlow / Keras 3 for evaluate, predict and export: a checkpoint's model, its
probabilities, and a rank that computes them the same way whatever the rank count.

``probability_layers`` turn the logits into one probability per class with standard Keras
layers only (binary: sigmoid, then a fixed ``Dense(2)`` giving exactly ``[1 - p, p]``; k
logits: softmax), so a ``.keras`` export loads without hvdtrain and the predictor computes the
very same operations. A rank runs on one CPU thread with deterministic ops: batches are the
same at any rank count, and so is every result. A model computes in float32 here whatever
``--precision`` it was trained with (its variables are float32 either way), as the torch
predictor does; a fine-tuned ``keras-hub:`` model takes the packed token batches its preset's
preprocessor makes (``pretrained.encode_texts``). Importing this module does not import TF.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain import comm
from hvdtrain.config import TrainConfig
from hvdtrain.frameworks.tensorflow.offline import OFFLINE, pin_device
from hvdtrain.types import Collectives, Dataset, DeviceChoice


def probability_layers(binary: bool) -> list[Any]:
    import keras

    if not binary:
        return [keras.layers.Activation("softmax", name="probabilities")]
    complement = keras.layers.Dense(2, name="probabilities", trainable=False)
    complement.build((None, 1))
    complement.set_weights([np.array([[-1.0, 1.0]], dtype=np.float32),
                            np.array([1.0, 0.0], dtype=np.float32)])  # p → [1 - p, p]
    return [keras.layers.Activation("sigmoid", name="sigmoid"), complement]


def load_model(config: TrainConfig, data: Dataset, checkpoint: Path) -> Any:
    """The checkpoint's model, built as training built it, with its weights (the model's
    variables come first in a checkpoint, the optimizer's after them)."""
    model = OFFLINE.build(replace(config, precision="fp32"), data)
    payload = OFFLINE.read_checkpoint(checkpoint)
    OFFLINE.check_checkpoint_fits(model, payload)
    for variable, array in zip(model.variables, payload["arrays"], strict=False):
        variable.assign(array)
    return model


def probabilities_model(model: Any, data: Dataset) -> Any:
    """A functional model: input ``x`` → the model → class probabilities."""
    import keras

    inputs = keras.Input((data.num_features,), dtype=str(data.x_train.dtype), name="x")
    out = model(inputs)
    for layer in probability_layers(data.num_classes == 2):
        out = layer(out)
    return keras.Model(inputs, out, name="hvdtrain_probabilities")


class TensorFlowPredictor:
    name = "tensorflow"

    def __init__(self) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self.tf = tf
        self.device = "cpu"
        self.model: Any = None
        self.head: list[Any] = []
        self.binary = False

    def connect(self) -> Collectives:
        tf = self.tf
        return comm.init("horovod.tensorflow",
                         lambda values: tf.constant(values, dtype=tf.float64))

    def pin(self, choice: DeviceChoice) -> None:
        self.device = pin_device(self.tf, choice, threads=1)  # see the module docstring

    def load(self, config: TrainConfig, data: Dataset, checkpoint: Path) -> None:
        self.binary = data.num_classes == 2
        self.model = load_model(config, data, checkpoint)
        self.head = probability_layers(self.binary)

    def run(self, x: np.ndarray, y: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray, float | None]:
        """(probabilities (n, classes) float32, predicted class ids, loss sum or None); the
        loss and the prediction as the training adapter computes them."""
        tf = self.tf
        logits = self.model(x, training=False)
        probabilities = logits
        for layer in self.head:
            probabilities = layer(probabilities)
        loss = None
        if self.binary:
            predicted = tf.cast(logits[:, 0] > 0, tf.int64)
            if y is not None:
                loss = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
                    labels=tf.cast(y, tf.float32), logits=tf.squeeze(logits, 1)))
        else:
            predicted = tf.argmax(logits, 1)
            if y is not None:
                loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=y, logits=logits))
        return (np.asarray(probabilities, dtype=np.float32), np.asarray(predicted),
                None if loss is None else float(loss))
